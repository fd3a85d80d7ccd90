"""Token ids to text deltas: never half a UTF-8 character, never the start of a stop string."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import Tokenizer

if TYPE_CHECKING:
    pass

REPLACEMENT_CHAR = "\ufffd"
# A UTF-8 character has at most 4 bytes, so a character split across tokens completes within a few of them;
# past this many ids the bytes are simply invalid (an untrained model can emit any byte) and go out as U+FFFD.
MAX_PENDING_IDS = 8


class TextStream:
    """Turns token ids into safe text deltas: whole characters only, stop strings held back.

    Only the ids not yet turned into text are decoded each step (they always start on a character
    boundary), so a long reply costs linear, not quadratic, decoding work.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.pending: list[int] = []  # ids whose bytes do not yet end on a whole character
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.pending.append(token_id)
        decoded = self.tokenizer.decode(self.pending, skip_special_tokens=False)
        if decoded.endswith(REPLACEMENT_CHAR) and len(self.pending) < MAX_PENDING_IDS:
            return ""  # wait for the rest of the character's bytes
        self.pending.clear()
        self.text += decoded
        for stop in self.stop:
            position = self.text.find(stop, max(0, self.emitted - len(stop)))
            if position >= 0:
                self.text = self.text[:position]
                self.stopped = True
                return self._take(len(self.text))
        safe_end = len(self.text)
        for stop in self.stop:  # hold back a tail that could still grow into a stop string
            for length in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:length]):
                    safe_end = min(safe_end, len(self.text) - length)
                    break
        return self._take(safe_end)

    def finish(self) -> str:
        """The held-back tail once the reply is over (an unfinished character comes out as U+FFFD)."""
        if self.stopped:
            return ""
        if self.pending:
            self.text += self.tokenizer.decode(self.pending, skip_special_tokens=False)
            self.pending.clear()
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted:end], end
        return delta
