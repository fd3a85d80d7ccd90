"""The full-screen chat app (`cogni chat RUN`), built on Textual."""

from cognimamba.chat.tui.app import ChatApp

__all__ = ["ChatApp"]
