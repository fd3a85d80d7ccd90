"""Load a trained run from Python and sample from it.

    python examples/api_sample.py runs/quickstart "Once upon a time"
"""

from __future__ import annotations

import sys

import torch

import cognimamba
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decoding import Decoder
from cognimamba.model.tokenizer import encode


def main(run: str, prompt: str) -> None:
    loaded = cognimamba.load(run)
    print(f"{loaded.config.profile} profile, {sum(p.numel() for p in loaded.model.parameters()):,} parameters")
    ids = torch.tensor([encode(loaded.tokenizer, prompt)])
    next_token_logits = loaded.model(ids)[0, -1]  # the model maps [batch, time] token ids to logits
    print("most likely next token:", repr(loaded.tokenizer.decode([int(next_token_logits.argmax())])))
    decoder = Decoder(loaded.model, loaded.tokenizer)
    settings = GenerationConfig(temperature=0.8, top_k=40, max_new_tokens=60, seed=0)
    print(prompt, end="", flush=True)
    for delta in decoder.stream(ids[0].tolist(), settings):
        print(delta, end="", flush=True)
    stats = decoder.stats
    print(f"\n[{stats.generated_tokens} tokens, {stats.tokens_per_second:.0f} tokens/s]")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "Once upon a time")
