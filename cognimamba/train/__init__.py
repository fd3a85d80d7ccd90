"""Training: the loop, its schedule and optimizer, checkpoints (run_dir.py) and the live display."""
