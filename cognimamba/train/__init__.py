"""Training: setup, the fit loop, its micro-step, evaluation and saving, schedule, optimizer, and the live display."""
