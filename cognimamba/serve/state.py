"""What every request handler shares: the model, its generation worker and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from cognimamba.serve.engine import ServedModel
from cognimamba.serve.worker import GenerationWorker

DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class ServerSettings:
    api_key: str | None = None  # None: no key needed
    cors_origins: list[str] = field(default_factory=list)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY  # requests running or queued; more get a 429
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger request bodies get a 413


@dataclass
class ServerState:
    model: ServedModel
    worker: GenerationWorker
    settings: ServerSettings
