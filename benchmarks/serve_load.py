"""Load on `cogni serve`: concurrent streaming clients (openai's AsyncOpenAI), then the server's overhead.

    python benchmarks/serve_load.py RUN [--clients 1,2,4,8,16] [--parallel 1,8] [--seconds 20]
                                        [--max-tokens 64] [--plot serve_load.png] [--overhead] [--no-compile]
                                        [--weights fp32|bf16|int8] [--llama-server BIN [--gguf-type f32]]

For each --parallel value it starts `cogni serve RUN --parallel P` on a free port and, for each number of
clients, runs that many clients at once, each sending streamed chat completions (a prompt of about 64 tokens,
numbered so no two requests share more than the chat template's first tokens: prompt caching saves nothing here)
back to back for --seconds; prints requests completed and failed, p50/p95 time to first token and total
generated tokens/s, and with --plot draws tokens/s and p95 time to first token against the clients
(matplotlib). `--parallel 1` decodes one reply at a time, as the server did before continuous batching, so
one run compares both on the same machine. With --overhead, the same greedy prompt through
`cogni chat RUN --prompt --json` (its prompt time plus decoding, without loading) and through the server (a
whole non-streamed request), tokens/s of each and their ratio. The server compiles its decoding steps as
`cogni serve` does by default; --no-compile serves them eagerly; --weights is `cogni serve --weights`. With
--llama-server, the same clients then load llama.cpp's own server (`-np P`, continuous batching) on the run's
`cogni export --format gguf` in --gguf-type, one after the other in one run; a server that sends no usage is
counted by its streamed events, one a token, as llama-server streams. Each server's N clients over 1 is printed
last. Results go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai import AsyncOpenAI

REPEATS = 3  # the overhead runs take the best of three: the machine may be shared
# About 64 tokens with a 4096-token TinyStories vocabulary (the server's usage says exactly; printed).
PROMPT = ("Tell me a story about a little dog who finds a red ball in the park. The dog is called Max and he "
          "lives with a girl named Lily. One sunny day they go to the park together, and Max runs to the big tree "
          "where he finds the ball. What happens next? Make it happy.")


@dataclass
class LoadResult:
    clients: int = 0
    prompt_tokens: int = 0
    completed: int = 0
    failed: int = 0
    tokens: int = 0
    reconnects: int = 0  # requests sent again on a new connection (open_stream)
    first_token_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def p95(self) -> float:
        ttft = sorted(self.first_token_seconds) or [0.0]
        return ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    def row(self, server: str, parallel: int) -> str:
        ttft = self.first_token_seconds or [0.0]
        return (f"| {server} | {parallel} | {self.clients} | {self.completed} | {self.failed} | "
                f"{statistics.median(ttft) * 1000:.0f} ms | {self.p95 * 1000:.0f} ms | {self.tokens_per_second:.1f} |"
                + (f" ({self.reconnects} reconnected)" if self.reconnects else ""))


async def open_stream(api: AsyncOpenAI, model: str, seed: int, max_tokens: int, result: LoadResult) -> Any:
    """The request's stream, sent again once if the connection failed before the server answered (llama-server
    drops kept-alive connections every few requests): a client's reconnect, counted apart from failures."""
    from openai import APIConnectionError

    def send() -> Any:
        return api.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"{seed}. {PROMPT}"}], max_tokens=max_tokens,
            seed=seed, stream=True, stream_options={"include_usage": True})

    try:
        return await send()
    except APIConnectionError:  # raised before the answer's headers: nothing was generated
        result.reconnects += 1
    return await send()


async def one_client(api: AsyncOpenAI, model: str, until: float, max_tokens: int, seed: int,
                     result: LoadResult) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            stream = await open_stream(api, model, seed, max_tokens, result)
            first, pieces, usage = None, 0, None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    first = first if first is not None else time.perf_counter() - started
                if chunk.usage:
                    usage = chunk.usage
            # The server's count of generated tokens; a server that sends no usage is counted by its events,
            # one a token (llama-server's way).
            result.tokens += usage.completion_tokens if usage else pieces
            if usage:
                result.prompt_tokens = usage.prompt_tokens
            result.completed += 1
            if first is not None:
                result.first_token_seconds.append(first)
        except Exception as error:  # counted, and the run goes on
            print(f"request failed: {type(error).__name__}: {error} ({error.__cause__!r})", file=sys.stderr)
            result.failed += 1
        seed += 1


async def load(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> LoadResult:
    from openai import AsyncOpenAI

    api = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    result = LoadResult(clients=clients)
    started = time.perf_counter()
    await asyncio.gather(*(one_client(api, model, started + seconds, max_tokens, 1000 * index, result)
                           for index in range(clients)))
    result.seconds = time.perf_counter() - started
    await api.close()  # inside the loop: closing after asyncio.run has ended it raises
    return result


def server_speed(url: str, model: str, max_tokens: int) -> tuple[float, int]:
    """Greedy tokens/s of a whole non-streamed request (prompt, decoding and HTTP), best of three."""
    import httpx

    best, tokens = 0.0, 0
    for repeat in range(REPEATS):  # numbered prompts, as `cogni chat --prompt` has no cache to find them in
        body = {"model": model, "messages": [{"role": "user", "content": f"{repeat}. {PROMPT}"}], "temperature": 0,
                "max_tokens": max_tokens}
        started = time.perf_counter()
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).json()
        tokens = reply["usage"]["completion_tokens"]
        best = max(best, tokens / (time.perf_counter() - started))
    return best, tokens


def local_speed(cli: list[str], run: Path, env: dict[str, str], max_tokens: int) -> tuple[float, int]:
    """The same through `cogni chat --prompt --json`: tokens over its prompt time plus decoding, best of three."""
    best, tokens = 0.0, 0
    for repeat in range(REPEATS):
        prompt = f"{repeat}. {PROMPT}"
        reply = json.loads(subprocess.run([*cli, "chat", str(run), "--prompt", prompt, "--temperature", "0",
                                           "--max-new-tokens", str(max_tokens), "--json"], capture_output=True,
                                          text=True, env=env, check=True).stdout)
        tokens = reply["generated_tokens"]
        seconds = reply["time_to_first_token"] + (tokens - 1) / reply["tokens_per_second"]
        best = max(best, tokens / seconds)
    return best, tokens


def local_url() -> tuple[str, int]:
    """A free loopback port and its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}", port


def once_answering(server: subprocess.Popen, url: str, model_id: Callable[[], str | None],
                   what: str) -> tuple[subprocess.Popen, str, str]:
    """The server, its URL and model id, once `model_id` names the model (two minutes at most)."""
    import httpx

    for _ in range(1200):
        try:
            if (model := model_id()) is not None:
                return server, url, model
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"{what} did not start")


def start_server(cli: list[str], run: Path, parallel: int, env: dict[str, str],
                 flags: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str, str]:
    """`cogni serve RUN --parallel P` on a free port, once it answers: the process, its URL and model id."""
    import httpx

    url, port = local_url()
    server = subprocess.Popen([*cli, "serve", str(run), "--port", str(port), "--queue-size", "64",
                               "--parallel", str(parallel), *flags], stderr=subprocess.DEVNULL, env=env)
    return once_answering(server, url, lambda: httpx.get(f"{url}/health").json()["model"], "the server")


def start_llama_server(binary: Path, gguf: Path, parallel: int, context: int,
                       threads: int) -> tuple[subprocess.Popen, str, str]:
    """llama.cpp's own server on the run's GGUF export: `parallel` slots of `context` positions each
    (continuous batching, its default), on `threads` threads, once it answers."""
    import httpx

    url, port = local_url()
    server = subprocess.Popen([str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                               "-np", str(parallel), "-c", str(context * parallel), "-t", str(threads)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def model_id() -> str | None:  # /health answers 503 while the model loads
        if httpx.get(f"{url}/health").status_code != 200:
            return None
        return httpx.get(f"{url}/v1/models").json()["data"][0]["id"]

    return once_answering(server, url, model_id, "llama-server")


def export_gguf(cli: list[str], run: Path, gguf_type: str, folder: Path, env: dict[str, str]) -> Path:
    """The run as `cogni export --format gguf` writes it, in `gguf_type`."""
    path = folder / f"model-{gguf_type}.gguf"
    subprocess.run([*cli, "export", str(run), "--format", "gguf", "--dtype", gguf_type, "--out", str(path)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return path


def plot(results: dict[str, list[LoadResult]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, latency) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in results.items():
        clients = [row.clients for row in rows]
        speed.plot(clients, [row.tokens_per_second for row in rows], marker="o", label=label)
        latency.plot(clients, [row.p95 * 1000 for row in rows], marker="o", label=label)
    speed.set(xlabel="concurrent streaming clients", ylabel="generated tokens/s, all clients", xscale="log")
    latency.set(xlabel="concurrent streaming clients", ylabel="time to first token, p95 (ms)", xscale="log")
    for axes in (speed, latency):
        axes.set_xticks(clients, [str(count) for count in clients])
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--clients", default="1,2,4,8,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--parallel", default="1,8", help="comma-separated --parallel values, one server each")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--plot", type=Path, help="draw the curves into this PNG (needs matplotlib)")
    parser.add_argument("--overhead", action="store_true", help="also compare one request with `cogni chat`")
    parser.add_argument("--no-compile", action="store_true", help="serve with `--no-compile` (eager decoding steps)")
    parser.add_argument("--weights", choices=("fp32", "bf16", "int8"), help="cogni serve --weights (default: run's)")
    parser.add_argument("--llama-server", type=Path, metavar="BIN",
                        help="also run the same clients against this llama-server on the run's GGUF export")
    parser.add_argument("--gguf-type", default="f32", choices=("f32", "f16", "q8_0"),
                        help="the export's weights for --llama-server (f32 beside fp32, f16 beside bf16)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama-server -t")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "cognimamba"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, list[LoadResult]] = {}
    print("| server | --parallel | clients | completed | failed | TTFT p50 | TTFT p95 | generated tokens/s, "
          "all clients |")
    print("|---|---|---|---|---|---|---|---|")
    gguf = None
    if args.llama_server:
        # The export lives as long as this object: removed when the script ends, however it ends.
        export_dir = tempfile.TemporaryDirectory(prefix="serve_load-")
        gguf = export_gguf(cli, args.run, args.gguf_type, Path(export_dir.name), env)
        context = json.loads((args.run / "config.json").read_text())["model"]["max_seq_len"]
    for parallel in [int(value) for value in args.parallel.split(",")]:
        flags = ("--no-compile",) if args.no_compile else ()
        flags += ("--weights", args.weights) if args.weights else ()
        servers = [("cogni", functools.partial(start_server, cli, args.run, parallel, env, flags))]
        if gguf is not None:
            servers.append((f"llama-server {args.gguf_type}", functools.partial(
                start_llama_server, args.llama_server, gguf, parallel, context, args.threads)))
        for name, start in servers:
            server, url, model = start()
            try:
                for clients in [int(value) for value in args.clients.split(",")]:
                    result = asyncio.run(load(url, model, clients, args.seconds, args.max_tokens))
                    results.setdefault(f"{name}, --parallel {parallel}", []).append(result)
                    print(result.row(name, parallel), flush=True)
                if args.overhead and name == "cogni":
                    served, served_tokens = server_speed(url, model, 128)
            finally:
                server.terminate()
                server.wait(30)
    print(f"prompt tokens per request: {next(iter(results.values()))[0].prompt_tokens}")
    for label, rows in results.items():
        if len(rows) > 1 and rows[0].clients == 1 and rows[0].tokens:
            ratios = ", ".join(f"{row.clients}: {row.tokens_per_second / rows[0].tokens_per_second:.2f}x"
                               for row in rows[1:])
            print(f"{label}: tokens/s over 1 client's, by clients: {ratios}")
    if args.plot:
        plot(results, args.plot)
    if args.overhead:
        local, local_tokens = local_speed(cli, args.run, env, 128)
        print(f"greedy tokens/s on the same prompt: cogni chat --prompt {local:.1f} ({local_tokens} tokens), "
              f"server {served:.1f} ({served_tokens} tokens), ratio {served / local:.2f}")


if __name__ == "__main__":
    main()
