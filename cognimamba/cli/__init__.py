"""The Typer app, its thin commands, and the quickstart pipeline."""
