"""Token ids to text deltas: never half a UTF-8 character, never the start of a stop string."""

from __future__ import annotations

from tokenizers import Tokenizer

REPLACEMENT_CHAR = "\ufffd"
# A UTF-8 character has at most 4 bytes, so a character split across tokens completes within a few of them;
# past this many ids the bytes are simply invalid (an untrained model can emit any byte) and go out as U+FFFD.
MAX_PENDING_IDS = 8


class TextStream:
    """Turns token ids into safe text deltas: whole characters only, stop strings held back.

    New ids are decoded together with the ids decoded just before them, and only the difference goes out
    (as transformers' TextIteratorStreamer does): SentencePiece-style decoders (Metaspace, Llama-2's Strip)
    drop the leading space of whatever they decode first, so ids decoded alone would lose every word's
    space. The window stays a few ids long, so a long reply costs linear, not quadratic, decoding work.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.window: list[int] = []  # the ids decoded last time (the context), then those not yet in `text`
        self.context_ids = 0  # how many of `window` are context
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.window.append(token_id)
        if not self._decode_window(final=False):
            return ""  # wait for the rest of the character's bytes
        cuts = [self.text.find(stop, max(0, self.emitted - len(stop))) for stop in self.stop]
        cuts = [position for position in cuts if position >= 0]
        if cuts:  # the stop string that starts first wins, whatever its place in the list
            self.text = self.text[:min(cuts)]
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
        self._decode_window(final=True)
        return self._take(len(self.text))

    def _decode_window(self, final: bool) -> bool:
        """Append the new ids' text to `text`; False while they end inside a character (unless `final`)."""
        pending = len(self.window) - self.context_ids
        if pending == 0:
            return True
        context = self.tokenizer.decode(self.window[:self.context_ids], skip_special_tokens=False)
        decoded = self.tokenizer.decode(self.window, skip_special_tokens=False)
        if decoded.endswith(REPLACEMENT_CHAR) and pending < MAX_PENDING_IDS and not final:
            return False
        self.text += decoded[len(context):]
        self.window = self.window[self.context_ids:]
        self.context_ids = len(self.window)
        return True

    def _take(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted:end], end
        return delta
