"""The vehicle's update agent: the persisted state machine and the shell that drives it."""
