"""Corpora: sources, preparation into data dirs, and batch loading."""
