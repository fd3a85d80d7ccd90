"""Hardware, crash-safe file writes, per-user paths, the console, fault points: what every layer may use."""
