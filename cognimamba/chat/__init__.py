"""Talking to a model: the ChatML + tools format, sessions, tools, history, the line mode and the TUI."""
