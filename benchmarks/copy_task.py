"""How many steps a small model needs to learn copying: all attention against Mamba-2/attention hybrids.

Each row of a batch holds random digit strings, each followed by a separator and the same string again; the loss
is on the copies only. Tool arguments are this skill (a number from the user's turn written into the call), and
it decides when `cogni quickstart --chat` starts getting them right (benchmarks/RESULTS.md). With --translate each
string is two numbers joined by a word token, and the copy joins them by that word's operator token instead, as
"12 times 7" becomes {"expression": "12 * 7"}: after the operator, the token to copy next follows a token the
copy does not contain.

    python benchmarks/copy_task.py                      # AAAA and MAMA, width 128, 600 steps each
    python benchmarks/copy_task.py --translate --patterns AAAA MMAM --steps 1500
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cognimamba.config.schema import ModelConfig
from cognimamba.model.build import build_model

VOCAB, START, SEPARATOR, END = 64, 10, 11, 12  # digits are 0-9; filler tokens are 20-59
WORDS, OPERATORS = (13, 14), (15, 16)  # with --translate: "times" in the source is "*" in the copy
IGNORE = -100


def _source_and_copy(generator: torch.Generator, translate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not translate:
        digits = torch.randint(0, 10, (int(torch.randint(3, 7, (), generator=generator)),), generator=generator)
        return digits, digits
    first, second = (torch.randint(0, 10, (int(torch.randint(1, 4, (), generator=generator)),), generator=generator)
                     for _ in range(2))
    which = int(torch.randint(0, len(WORDS), (), generator=generator))
    return (torch.cat([first, torch.tensor([WORDS[which]]), second]),
            torch.cat([first, torch.tensor([OPERATORS[which]]), second]))


def copy_batch(generator: torch.Generator, rows: int, length: int,
               translate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(20, 60, (rows, length + 1), generator=generator)
    targets = torch.full((rows, length + 1), IGNORE)
    for row in range(rows):
        position = 0
        while True:
            source, copy = _source_and_copy(generator, translate)
            piece = torch.cat([torch.tensor([START]), source, torch.tensor([SEPARATOR]), copy, torch.tensor([END])])
            position += int(torch.randint(0, 4, (), generator=generator))
            if position + len(piece) > length + 1:
                break
            tokens[row, position:position + len(piece)] = piece
            copy_start = position + len(source) + 2  # the first copied token
            targets[row, copy_start:copy_start + len(copy) + 1] = piece[len(source) + 2:]
            position += len(piece)
    return tokens[:, :-1], targets[:, 1:]


def run(pattern: str, width: int, steps: int, every: int, lr: float, translate: bool) -> None:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, dim=width, n_layers=len(pattern), n_heads=4, n_kv_heads=2,
                         ffn_dim=width * 3, max_seq_len=128, layer_pattern=pattern if "M" in pattern else "")
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    train_data, eval_data = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    params = sum(p.numel() for p in model.parameters())
    print(f"{pattern} width {width}: {params / 1e6:.2f}M params")
    start = time.perf_counter()
    for step in range(1, steps + 1):
        inputs, targets = copy_batch(train_data, 32, 64, translate)
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every == 0:
            with torch.no_grad():
                inputs, targets = copy_batch(eval_data, 32, 64, translate)
                predicted = model(inputs).argmax(-1)
                copied = targets != IGNORE
                accuracy = (predicted[copied] == targets[copied]).float().mean().item()
            print(f"  step {step:5d}  copy accuracy {accuracy:.2f}  {time.perf_counter() - start:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", nargs="+", default=["AAAA", "MAMA"], help="A = attention, M = Mamba-2")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--translate", action="store_true", help="numbers joined by a word, copied with its operator")
    args = parser.parse_args()
    for pattern in args.patterns:
        run(pattern, args.width, args.steps, args.every, args.lr, args.translate)


if __name__ == "__main__":
    main()
