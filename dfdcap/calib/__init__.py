"""calib stage of dfdcap."""
