"""Token ids to text deltas: never half a UTF-8 character, never the start of a stop string."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenizers import Tokenizer

REPLACEMENT_CHAR = "\ufffd"
# A UTF-8 character has at most 4 bytes, so a character split across tokens completes within a few of them;
# past this many ids the bytes are simply invalid (an untrained model can emit any byte) and go out as U+FFFD.
MAX_PENDING_IDS = 8


@dataclass
class StopMatcher:
    """How much of one stop string the text so far ends with, updated one new character at a time (KMP).

    Knuth-Morris-Pratt keeps the longest prefix of the stop string that ends the text, so a new character costs
    amortized constant time however long the stop string is; testing every prefix on every token cost the
    stop string's length squared. The failure table is built only as far as a partial match has reached.
    """

    stop: str
    matched: int = 0  # the longest prefix of `stop` that the text so far ends with
    table: list[int] = field(default_factory=lambda: [0])  # table[i]: the longest proper border of stop[:i + 1]

    def feed(self, text: str) -> int | None:
        """The index in `text` just past the stop string's first complete occurrence, or None."""
        if not self.matched and self.stop[0] not in text:
            return None  # the usual case, at C speed
        for index, char in enumerate(text):
            while self.matched and self.stop[self.matched] != char:
                self.matched = self._border(self.matched - 1)
            if self.stop[self.matched] == char:
                self.matched += 1
            if self.matched == len(self.stop):
                return index + 1
        return None

    def _border(self, end: int) -> int:
        """table[end], extending the table up to it (the border of stop[:i + 1] needs only earlier entries)."""
        stop, table = self.stop, self.table
        while len(table) <= end:
            border = table[-1]
            while border and stop[len(table)] != stop[border]:
                border = table[border - 1]
            table.append(border + 1 if stop[len(table)] == stop[border] else 0)
        return table[end]


class TextStream:
    """Turns token ids into safe text deltas: whole characters only, stop strings held back.

    New ids are decoded together with the ids decoded just before them, and only the difference goes out
    (as transformers' TextIteratorStreamer does): SentencePiece-style decoders (Metaspace, Llama-2's Strip)
    drop the leading space of whatever they decode first, so ids decoded alone would lose every word's
    space. The window stays a few ids long, so a long reply costs linear, not quadratic, decoding work.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.matchers = [StopMatcher(s) for s in stop if s]
        self.window: list[int] = []  # the ids decoded last time (the context), then those not yet in `text`
        self.context_ids = 0  # how many of `window` are context
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.window.append(token_id)
        start = len(self.text)
        if not self._decode_window(final=False):
            return ""  # wait for the rest of the character's bytes
        new_text = self.text[start:]
        cuts = [start + end - len(matcher.stop) for matcher in self.matchers
                if (end := matcher.feed(new_text)) is not None]
        if cuts:  # the stop string that starts first wins, whatever its place in the list
            self.text = self.text[:min(cuts)]
            self.stopped = True
            return self._take(len(self.text))
        held = max((matcher.matched for matcher in self.matchers), default=0)  # it could still grow into a stop
        return self._take(len(self.text) - held)

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
