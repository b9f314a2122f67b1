"""Hardware-aware planning: measured cost curves (calibrate) and the choice of each round's tree shape (planner)."""
