"""The chat page `cogni serve` shows at `/`: its route (`page`) and its packaged files (`static/`)."""
