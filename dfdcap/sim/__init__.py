"""sim stage of dfdcap."""
