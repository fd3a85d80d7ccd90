"""Load on `cogni serve`: concurrent streaming clients (openai's AsyncOpenAI), then the server's overhead.

    python benchmarks/serve_load.py RUN [--clients 8] [--seconds 60] [--solo-seconds 20] [--max-tokens 64]

Starts `cogni serve RUN` on a free port, runs one client alone, then N clients at once, each sending
streamed chat completions back to back; prints requests completed and failed, p50/p95 time to first
token and total generated tokens/s for each. Then the overhead: the same greedy prompt through
`cogni chat RUN --prompt --json` (its prompt time plus decoding, without loading) and through the server
(a whole non-streamed request), tokens/s of each and their ratio. Results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openai import AsyncOpenAI

REPEATS = 3  # the overhead runs take the best of three: the machine may be shared
PROMPT = "Tell me a story about a little dog who finds a red ball."


@dataclass
class LoadResult:
    completed: int = 0
    failed: int = 0
    tokens: int = 0
    first_token_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def line(self, label: str) -> str:
        ttft = sorted(self.first_token_seconds) or [0.0]
        p95 = ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))]
        return (f"{label}: {self.completed} completed, {self.failed} failed, TTFT p50 "
                f"{statistics.median(ttft) * 1000:.0f} ms / p95 {p95 * 1000:.0f} ms, "
                f"{self.tokens / self.seconds:.1f} tokens/s total")


async def one_client(api: AsyncOpenAI, model: str, until: float, max_tokens: int, seed: int,
                     result: LoadResult) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            stream = await api.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, seed=seed,
                stream=True, stream_options={"include_usage": True})
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
                if chunk.usage:
                    result.tokens += chunk.usage.completion_tokens
            result.completed += 1
            if first is not None:
                result.first_token_seconds.append(first)
        except Exception as error:  # counted, and the run goes on
            print(f"request failed: {type(error).__name__}: {error}", file=sys.stderr)
            result.failed += 1
        seed += 1


async def load(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> LoadResult:
    api = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    result = LoadResult()
    started = time.perf_counter()
    await asyncio.gather(*(one_client(api, model, started + seconds, max_tokens, 1000 * index, result)
                           for index in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


def server_speed(url: str, model: str, max_tokens: int) -> tuple[float, int]:
    """Greedy tokens/s of a whole non-streamed request (prompt, decoding and HTTP), best of three."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
            "max_tokens": max_tokens}
    best, tokens = 0.0, 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).json()
        tokens = reply["usage"]["completion_tokens"]
        best = max(best, tokens / (time.perf_counter() - started))
    return best, tokens


def local_speed(cli: list[str], run: Path, env: dict[str, str], max_tokens: int) -> tuple[float, int]:
    """The same through `cogni chat --prompt --json`: tokens over its prompt time plus decoding, best of three."""
    best, tokens = 0.0, 0
    for _ in range(REPEATS):
        reply = json.loads(subprocess.run([*cli, "chat", str(run), "--prompt", PROMPT, "--temperature", "0",
                                           "--max-new-tokens", str(max_tokens), "--json"], capture_output=True,
                                          text=True, env=env, check=True).stdout)
        tokens = reply["generated_tokens"]
        seconds = reply["time_to_first_token"] + (tokens - 1) / reply["tokens_per_second"]
        best = max(best, tokens / seconds)
    return best, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--solo-seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "cognimamba"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([*cli, "serve", str(args.run), "--port", str(port), "--max-concurrency", "64"],
                              stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(1200):
            try:
                model = httpx.get(f"{url}/health").json()["model"]
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(asyncio.run(load(url, model, 1, args.solo_seconds, args.max_tokens)).line("1 client"))
        crowd = asyncio.run(load(url, model, args.clients, args.seconds, args.max_tokens))
        print(crowd.line(f"{args.clients} clients"))
        served, served_tokens = server_speed(url, model, 128)
    finally:
        server.terminate()
        server.wait(30)
    local, local_tokens = local_speed(cli, args.run, env, 128)
    print(f"greedy tokens/s on the same prompt: cogni chat --prompt {local:.1f} ({local_tokens} tokens), "
          f"server {served:.1f} ({served_tokens} tokens), ratio {served / local:.2f}")


if __name__ == "__main__":
    main()
