"""`cogni serve`: a run dir behind an OpenAI-compatible HTTP API (FastAPI + uvicorn, the `serve` extra)."""
