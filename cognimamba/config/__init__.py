"""The typed config: its schema, --set/TOML overrides, and the hardware profiles that preset it."""
