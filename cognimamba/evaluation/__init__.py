"""Measuring a run: loss, run checks, tool eval, bench, plots."""
