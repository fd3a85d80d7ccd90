"""How long a burst of prompts takes to read: N requests sent at once (lm-eval's batch, the chat eval's first
turns, clients that connect together), with the prompts read several to a forward pass against one a pass.

    python benchmarks/prompt_burst.py RUN [--requests 8] [--words 50] [-r 10]

Both sides are the batching engine (inference/batching.py) on the same loaded model with `--requests` slots:
`grouped` reads every prompt waiting at the same position in one forward pass (the default), `one a pass`
reads them one after another (`group_prompts=False`, the engine before). Each sample sends the requests at once
(numbered prompts, so prompt caching finds only their common start) and waits for every first token (one greedy
token each); the two sides alternate (evaluation/timing.interleaved). Prints prompt tokens/s of each and their
ratio. A model with Mamba-2 layers always reads one prompt a pass, so both sides are the same there.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from cognimamba.config.schema import GenerationConfig
from cognimamba.evaluation.timing import Side, interleaved, markdown_table
from cognimamba.inference.batching import BatchEngine, SlotRequest
from cognimamba.runs.loading import load_run

STORY = ("Tell me a story about a little dog who finds a red ball in the park. The dog is called Max and he lives "
         "with a girl named Lily. One sunny day they go to the park together, and Max runs to the big tree where he "
         "finds the ball. What happens next? Make it happy and long, with a song at the end of it.")


def burst(engine: BatchEngine, prompts: list[list[int]]) -> None:
    """Send every prompt at once; return when each has its first token."""
    done = [threading.Event() for _ in prompts]
    settings = GenerationConfig(temperature=0.0, max_new_tokens=1)
    for prompt, event in zip(prompts, done, strict=True):
        engine.submit(SlotRequest(prompt, settings, on_done=lambda stats, error, event=event: event.set()))
    for event in done:
        event.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--requests", type=int, default=8, help="requests sent at once (and slots)")
    parser.add_argument("--words", type=int, default=50, help="words of each prompt")
    parser.add_argument("-r", "--repetitions", type=int, default=10)
    args = parser.parse_args()
    loaded = load_run(args.run)
    words = STORY.split()
    text = " ".join((words * (args.words // len(words) + 1))[:args.words])
    samples = [0]

    def prompts() -> list[list[int]]:  # new numbers each sample: nothing but their start is cached
        samples[0] += 1
        return [loaded.tokenizer.encode(f"{samples[0]}-{index}. {text}").ids for index in range(args.requests)]

    tokens = sum(len(prompt) for prompt in prompts())
    sides = []
    for name, grouped in (("grouped", True), ("one a pass", False)):
        engine = BatchEngine(loaded.model, loaded.tokenizer, args.requests, group_prompts=grouped)
        sides.append(Side(name, {"burst": lambda engine=engine: burst(engine, prompts())}))
    interleaved([sides], {"burst": tokens}, args.repetitions, min_seconds=0.5)
    rows = [[side.name, f"{side.median('burst'):,.0f}", f"{side.median('burst') / sides[1].median('burst'):.2f}x"]
            for side in sides]
    print(f"{args.requests} requests of about {tokens // args.requests} prompt tokens sent at once, "
          f"{loaded.model.config.layer_pattern or 'attention'}, median of {args.repetitions}:")
    print(markdown_table(["prompts read", "prompt tokens/s, to every first token", "vs one a pass"], rows, {1, 2}))


if __name__ == "__main__":
    main()
