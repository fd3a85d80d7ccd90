"""The chat eval's argument rate split by tool, with every miss printed: which calls a chat model gets wrong.

    python benchmarks/chat_eval_by_tool.py RUN HELD_OUT.jsonl [--conversations N]

Replays each tool-calling assistant turn as `cogni test-model RUN --chat-eval` does (same prompt fitting, greedy).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cognimamba.chat.format import normalize_tool_calls
from cognimamba.evaluation.chat_eval import RunCompletions, fit_prompt, reply_reserve, reply_text
from cognimamba.evaluation.tool_eval import (
    DEFAULT_MAX_NEW_TOKENS,
    ToolEvalReport,
    eval_turns,
    load_eval_conversations,
    score_turn,
)
from cognimamba.runs.loading import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("held_out", type=Path)
    parser.add_argument("--conversations", type=int, default=None, help="the first N only")
    args = parser.parse_args()
    loaded = load_run(args.run)
    model = RunCompletions(loaded.model, loaded.tokenizer)
    reserve = reply_reserve(model, DEFAULT_MAX_NEW_TOKENS)
    right: dict[str, list[int]] = {}
    for conversation in load_eval_conversations(args.held_out)[:args.conversations]:
        for history, reference in eval_turns(conversation):
            wanted = normalize_tool_calls(reference.get("tool_calls"))
            fitted = fit_prompt(history, conversation.tools, model, reserve)
            if not wanted or fitted is None:
                continue
            reply = reply_text(model.complete(fitted[0], DEFAULT_MAX_NEW_TOKENS))
            correct = score_turn(reference, reply, ToolEvalReport())
            counts = right.setdefault(wanted[0].name, [0, 0])
            counts[0] += correct
            counts[1] += 1
            if not correct:
                asked = next(m["content"] for m in reversed(history) if m["role"] == "user")
                print(f"{wanted[0].name}: {asked!r}\n    wanted {wanted[0].arguments}\n    got    {reply[:160]!r}")
    for name, (good, total) in right.items():
        print(f"{name}: right arguments {good}/{total}")


if __name__ == "__main__":
    main()
