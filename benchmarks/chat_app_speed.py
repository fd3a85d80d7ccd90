"""The chat app's decoding speed against `cogni chat --prompt` on the same model, prompt and greedy settings.

    python benchmarks/chat_app_speed.py RUN [--rounds 3] [--tokens 200] [--prompt "Once upon a time"] [--in-process]

Both sides run interleaved, round by round, each with its model loaded once: `--prompt` is what
`cogni chat RUN --prompt` runs (a ChatController reply from a ChatModel in this process, printed to a quiet
stream); the app is the full-screen ChatApp driven headless by Textual's `run_test` at 120x40, its replies
decoded in a model process (inference/model_process.py) as `cogni chat RUN` does, or with `--in-process` by a
ChatModel in this process (the app before the model process, for the before/after table). Each side's figure is
the decoder's tokens/s after the first token, as the app's status line and `--json` report it. Prints one row
per round and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import threading
from pathlib import Path

from cognimamba.chat.controller import ChatController
from cognimamba.chat.history import HistoryStore
from cognimamba.chat.plain import ReplyPrinter, reply_once
from cognimamba.chat.session import ChatSession, ReplySource
from cognimamba.chat.sources import LocalSource
from cognimamba.chat.tui.app import ChatApp, NewChatDefaults
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.model_process import LoadRequest, ModelProcess


def prompt_side(model: ReplySource, text: str, tokens: int) -> float:
    session = ChatSession(settings=GenerationConfig(temperature=0.0, max_new_tokens=tokens))
    quiet = io.StringIO()
    reply_once(ChatController(session), text, model, ReplyPrinter(quiet, quiet))
    return model.stats.tokens_per_second


async def app_side(model: ReplySource, text: str, tokens: int, db: Path) -> float:
    app = ChatApp(lambda: model, HistoryStore(db), run_label="bench",
                  defaults=NewChatDefaults(setting_overrides={"temperature": 0, "max_new_tokens": tokens}))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        box = app.query_one(PromptInput)
        box.focus()
        box.load_text(text)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    return model.stats.tokens_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--in-process", action="store_true", help="the app decodes in its own process, as before "
                        "the model process (cogni chat --in-process)")
    args = parser.parse_args()
    request = LoadRequest(args.run)  # as `cogni chat RUN` loads it, in this process and in a model process
    model = LocalSource(request.load())
    app_model = model if args.in_process else LocalSource(ModelProcess(request))
    for source in [model] if app_model is model else [model, app_model]:
        source.warm_up()
        prompt_side(source, args.prompt, 8)  # first-call costs stay out of the figures
    print(f"app decodes {'in its own process' if args.in_process else 'in a model process'}")
    print(f"{'round':>5}  {'--prompt tok/s':>14}  {'app tok/s':>9}  {'app / --prompt':>14}")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for index in range(args.rounds):
                plain = prompt_side(model, args.prompt, args.tokens)
                app = asyncio.run(app_side(app_model, args.prompt, args.tokens, Path(scratch) / f"h{index}.db"))
                print(f"{index + 1:>5}  {plain:>14.1f}  {app:>9.1f}  {app / plain:>14.2f}")
    finally:
        app_model.close()  # a model process ends; the in-process model has nothing to let go
    print(f"threads alive at the end: {threading.active_count()}")


if __name__ == "__main__":
    main()
