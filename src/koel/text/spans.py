"""Rewritten text that remembers which source characters each part came from."""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A piece of rewritten text and the source characters ``start:end`` it stands for.

    ``verbatim`` pieces are copies of the source (so positions map one to one); rewritten pieces
    ("9:30" -> "nine thirty") map every position to the whole source span. ``phonemes`` is set for
    pronunciation overrides: the text is then only shown, the phonemes are spoken.
    """

    text: str
    start: int
    end: int
    verbatim: bool = True
    phonemes: str | None = None


def verbatim(source: str, start: int, end: int) -> Span:
    """A span that copies ``source[start:end]``."""
    return Span(source[start:end], start, end, True)


class Rewritten:
    """The concatenation of spans, with a map from its positions back to source positions."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = [s for s in spans if s.text]
        self.text = "".join(s.text for s in self.spans)
        self._offsets: list[int] = []
        pos = 0
        for s in self.spans:
            self._offsets.append(pos)
            pos += len(s.text)

    def _span_at(self, pos: int) -> int:
        return max(0, bisect.bisect_right(self._offsets, pos) - 1)

    def source(self, start: int, end: int) -> tuple[int, int]:
        """Source span of the rewritten characters ``start:end`` (``end > start``)."""
        if not self.spans:
            return (0, 0)
        i = self._span_at(start)
        j = self._span_at(max(start, end - 1))
        a, b = self.spans[i], self.spans[j]
        src_start = a.start + (start - self._offsets[i]) if a.verbatim else a.start
        src_end = b.start + (end - self._offsets[j]) if b.verbatim else b.end
        return (min(src_start, b.end), max(src_end, src_start))

    def overrides(self) -> list[tuple[int, int, str]]:
        """``(start, end, phonemes)`` in rewritten positions for every override span."""
        return [
            (off, off + len(s.text), s.phonemes)
            for off, s in zip(self._offsets, self.spans, strict=True)
            if s.phonemes is not None
        ]
