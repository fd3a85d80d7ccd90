"""Recipes: whole pipelines as data (a TOML per profile) run by one resumable command, `cogni recipe chat`."""
