"""One module per CLI command: Typer signatures at the top, heavy imports inside the function."""
