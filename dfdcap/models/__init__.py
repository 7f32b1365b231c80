"""models stage of dfdcap."""
