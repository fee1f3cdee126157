"""A small rewrite engine: regex rules tried in priority order, output as source-mapped spans."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import regex

from koel.text.spans import Span

_SENTENCE_TAIL = " \t\r\n\"'”’)]»"
_NO_SPACE_BEFORE = "([{\"'“‘¿¡«"
_NO_SPACE_AFTER = ".,;:!?)]}\"'”’…»"


@dataclass
class Ctx:
    """What a rule handler may look at: the whole sentence and the options."""

    text: str
    british: bool = False

    def at_end(self, end: int) -> bool:
        """Whether only closing punctuation follows ``end`` (an abbreviation's period then ends the sentence)."""
        return not self.text[end:].strip(_SENTENCE_TAIL)

    def prev_word(self, start: int) -> str:
        m = regex.search(r"(\S+)\s+$", self.text[:start])
        return m.group(1).strip("\"'“”‘’([{,;:") if m else ""

    def next_word(self, end: int) -> str:
        m = regex.match(r"\s+(\S+)", self.text[end:])
        return m.group(1) if m else ""


Handler = Callable[[regex.Match, Ctx], "str | None"]
Rule = tuple[str, str, Handler]


class RuleNormalizer:
    """Apply ``rules`` left to right; at each position the first rule whose handler accepts wins."""

    def __init__(self, rules: Sequence[Rule], british: bool = False, *, pad: bool = True) -> None:
        self.british = british
        self.pad = pad
        self._rules = [(name, regex.compile(p), h) for name, p, h in rules]
        self._any = regex.compile("|".join(f"(?:{p})" for _, p, _ in rules))

    def __call__(self, text: str, offset: int = 0) -> list[Span]:
        """Spans covering ``text``; source positions are shifted by ``offset``."""
        ctx = Ctx(text, self.british)
        spans: list[Span] = []
        pos = search = 0
        while True:
            m = self._any.search(text, search)
            if m is None:
                break
            start = m.start()
            hit = self._apply(text, start, ctx)
            if hit is None:
                search = start + 1
                continue
            end, spoken = hit
            if start > pos:
                spans.append(Span(text[pos:start], offset + pos, offset + start, True))
            spoken = _pad(text, start, end, spoken) if self.pad else spoken
            spans.append(Span(spoken, offset + start, offset + end, False))
            pos = search = max(end, start + 1)
        if pos < len(text):
            spans.append(Span(text[pos:], offset + pos, offset + len(text), True))
        return spans

    def text(self, text: str) -> str:
        """The rewritten text alone."""
        return "".join(s.text for s in self(text))

    def _apply(self, text: str, start: int, ctx: Ctx) -> tuple[int, str] | None:
        for _name, pattern, handler in self._rules:
            m = pattern.match(text, start)
            if m is None or m.end() == start:
                continue
            try:
                spoken = handler(m, ctx)
            except ValueError:
                # a number the handler cannot read: regex's \d knows digits of newer Unicode versions
                # than Python's int() (U+11DE0, a Sunuwar digit, on 3.11); the text is left as written
                spoken = None
            if spoken is not None:
                return m.end(), spoken
        return None


def _pad(text: str, start: int, end: int, spoken: str) -> str:
    """Keep rewritten words apart from their neighbours ("5km" -> "five kilometers")."""
    spoken = " ".join(spoken.split()) if spoken.strip() else " "
    if (
        start > 0
        and not text[start - 1].isspace()
        and text[start - 1] not in _NO_SPACE_BEFORE
        and spoken[0].isalnum()
    ):
        spoken = " " + spoken
    if (
        end < len(text)
        and not text[end].isspace()
        and text[end] not in _NO_SPACE_AFTER
        and spoken[-1].isalnum()
    ):
        spoken += " "
    return spoken
