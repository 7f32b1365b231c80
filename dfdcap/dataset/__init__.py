"""dataset stage of dfdcap."""
