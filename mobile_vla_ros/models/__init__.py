"""Neural-network modules of the action expert."""
