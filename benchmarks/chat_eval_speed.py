"""Wall time of the chat eval with held-out turns decoded one at a time and in sequence slots, same run and figures.

    python benchmarks/chat_eval_speed.py RUN [HELD_OUT.jsonl] [--conversations 100] [--slots 1-,1,8]

Without a file, the held-out conversations are the synthetic chat corpus's (`cogni prepare synthetic-chat`'s
generator, seed 1). Runs `cogni test-model --chat-eval`'s replay (inference/batching.py's engine) once per
--slots value, one after the other, and prints each wall time, the speed-up over the first, how many prompt ids
were read rather than found in a slot (prompt caching), and whether the figures are identical (they must be:
greedy decoding gives the same tokens in any slot). A value ending in `-` decodes without prompt caching
(inference/prefix_reuse.py): `1-` is the eval as it ran before the batching engine, every turn's whole prompt
read one at a time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cognimamba.data.synthetic.chat import write_conversations
from cognimamba.evaluation.chat_eval import RunCompletions, chat_eval
from cognimamba.evaluation.tool_eval import load_eval_conversations
from cognimamba.runs.loading import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("held_out", type=Path, nargs="?")
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--slots", default="1-,1,8", help="comma-separated slot counts, each timed once; N- "
                        "without prompt caching")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.held_out
        if path is None:
            path = Path(scratch) / "held_out.jsonl"
            write_conversations(path, args.conversations, seed=1)
        conversations = load_eval_conversations(path)[:args.conversations]
    loaded = load_run(args.run)
    first_seconds, first_metrics = None, None
    for value in args.slots.split(","):
        slots, cached = int(value.rstrip("-")), not value.endswith("-")
        model = RunCompletions(loaded.model, loaded.tokenizer, slots=slots, prompt_cache=cached)
        started = time.perf_counter()
        report = chat_eval(model, conversations)
        seconds = time.perf_counter() - started
        metrics = report.metrics()
        first_seconds, first_metrics = first_seconds or seconds, first_metrics or metrics
        read = model.prompt_tokens - model.cached_tokens
        print(f"slots {value}: {len(conversations)} conversations, {report.turns} turns in {seconds:.1f} s "
              f"({first_seconds / seconds:.2f}x the first), {read} of {model.prompt_tokens} prompt ids read; "
              f"{report.summary()}; "
              f"figures {'identical' if metrics == first_metrics else 'DIFFERENT'}", flush=True)


if __name__ == "__main__":
    main()
