"""sync stage of dfdcap."""
