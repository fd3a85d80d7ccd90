"""The full-screen chat app (`cogni chat RUN`), built on Textual."""

from cognimamba.tui.app import ChatApp

__all__ = ["ChatApp"]
