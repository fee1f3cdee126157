"""Paragraphs and sentences of the source text, and chunks of at most MAX_PHONEMES phonemes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import regex

from koel.constants import MAX_PHONEMES
from koel.types import PhonemeChunk, Word

log = logging.getLogger(__name__)


def _split(words: str) -> list[str]:
    return words.split()


MAX_SENTENCE_CHARS = 600
"""Longer sentences are cut (at clauses, then spaces) before G2P so memory and latency stay bounded."""

# A '.' after these does not end a sentence (titles, "e.g.", "No. 5", initials are handled apart).
_NO_BREAK_AFTER = frozenset(
    _split(
        """mr mrs ms mx dr prof st mt ft capt col gen gov lt sgt cmdr adm rev hon pres sen rep supt
        jr sr vs e.g i.e cf approx viz no nos vol vols fig figs ch sec eq pp p op ref dept
        jan feb mar apr jun jul aug sep sept oct nov dec a.k.a
        sr sra srta dra ud uds ee sig dott mme mlle av pág núm aprox sig.ra"""
    )
)
_CANDIDATE = regex.compile(
    r"(?:[.!?…]+|[。！？]+|[।॥]+)[\"'”’)\]»」』]*(?=\s|$)|[。！？]+[\"'”’)\]»」』]*|\n(?=\s*\S)"
)
_CLAUSE_CUT = regex.compile(r"[,;:—–、，；：](?=\s)|[、，；：]")
_PARAGRAPH = regex.compile(r"\n[ \t\r\f\v]*\n\s*")
SENTENCE_PUNCT = frozenset("!.?…")
_WATERFALL = (frozenset("!.?…"), frozenset(":;"), frozenset(",—"))
_BUMPS = frozenset(')”"’»')


@dataclass(frozen=True)
class Sentence:
    """Source span of one sentence (or one piece of an over-long sentence)."""

    start: int
    end: int
    sentence_end: bool = True
    paragraph_end: bool = False


def paragraphs(text: str) -> Iterator[tuple[int, int]]:
    """Spans of the blank-line separated paragraphs (empty ones skipped)."""
    pos = 0
    for m in _PARAGRAPH.finditer(text):
        if text[pos : m.start()].strip():
            yield pos, m.start()
        pos = m.end()
    if text[pos:].strip():
        yield pos, len(text)


_NEXT_CHAR = regex.compile(r"\s*(\S)")
_LAST_WORD = regex.compile(r"(\S+)$")


def _is_break(text: str, start: int, m: regex.Match) -> bool:
    # Only look a few characters around the mark: slicing to the end of a 1 MB text per candidate
    # would make segmentation quadratic.
    mark = m.group(0)
    nxt = _NEXT_CHAR.match(text, m.end(), min(len(text), m.end() + 256))
    nxt_char = nxt.group(1) if nxt else ""
    if mark.startswith("\n"):
        return not nxt_char.islower()
    if not mark.startswith(".") or mark.startswith(".."):
        return True
    before = _LAST_WORD.search(text, max(start, m.start() - 64), m.start())
    word = before.group(1).lower().lstrip("\"'“‘([") if before else ""
    if word in _NO_BREAK_AFTER or word.rstrip(".") in _NO_BREAK_AFTER:
        return word in ("no", "nos") and not nxt_char.isdigit()
    if regex.fullmatch(r"\p{Lu}", before.group(1) if before else ""):
        return False  # an initial: "J. K. Rowling"
    return not nxt_char.islower()


def _split_long(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Cut text[start:end] into pieces of at most MAX_SENTENCE_CHARS, at clauses, then spaces."""
    while end - start > MAX_SENTENCE_CHARS:
        limit = start + MAX_SENTENCE_CHARS
        window = text[start:limit]
        cut = -1
        for m in _CLAUSE_CUT.finditer(window):
            if m.end() > MAX_SENTENCE_CHARS // 3:
                cut = m.end()
        if cut < 0:
            cut = window.rfind(" ", MAX_SENTENCE_CHARS // 3) + 1
        if cut <= 0:
            cut = MAX_SENTENCE_CHARS
            if 0xDC00 <= ord(text[start + cut]) <= 0xDFFF:  # keep a surrogate pair together
                cut -= 1
        yield start, start + cut
        start += cut
    yield start, end


def _paragraph_spans(text: str, p_start: int, p_end: int) -> Iterator[tuple[int, int]]:
    pos = p_start
    for m in _CANDIDATE.finditer(text, p_start, p_end):
        if m.end() <= pos or not _is_break(text, pos, m):
            continue
        if text[pos : m.end()].strip():
            yield pos, m.end()
        pos = m.end()
    if text[pos:p_end].strip():
        yield pos, p_end


def sentences(text: str) -> Iterator[Sentence]:
    """Sentences of ``text`` in order (lazily), covering every non-space character."""
    for p_start, p_end in paragraphs(text):
        spans = _paragraph_spans(text, p_start, p_end)
        current = next(spans, None)
        while current is not None:
            following = next(spans, None)
            pieces = _split_long(text, *current)
            piece = next(pieces)
            for after in pieces:
                yield Sentence(*piece, sentence_end=False, paragraph_end=False)
                piece = after
            yield Sentence(*piece, sentence_end=True, paragraph_end=following is None)
            current = following


@dataclass
class Item:
    """A source word on its way into a chunk (see koel.types.Word)."""

    text: str
    phonemes: str
    char_start: int
    char_end: int
    space_after: bool = True
    sentence_end: bool = False
    paragraph_end: bool = False


def _is_punct(ps: str, marks: frozenset[str]) -> bool:
    return bool(ps) and all(c in marks for c in ps)


@dataclass
class _Buffer:
    items: list[Item] = field(default_factory=list)
    length: int = 0
    space: bool = False  # a space is owed before the next phonemes

    def cost(self, it: Item) -> int:
        if not it.phonemes:
            return 0
        return len(it.phonemes) + (1 if self.length and self.space else 0)

    def add(self, it: Item) -> None:
        self.length += self.cost(it)
        self.items.append(it)
        if it.phonemes:
            self.space = it.space_after
        else:
            self.space = self.space or it.space_after

    @classmethod
    def of(cls, items: Iterable[Item]) -> _Buffer:
        b = cls()
        for it in items:
            b.add(it)
        return b

    def has_sound(self) -> bool:
        return any(it.phonemes for it in self.items)


def _split_item(it: Item, limit: int) -> list[Item]:
    """Cut a word whose phonemes exceed ``limit`` into pieces, at spaces where possible."""
    out: list[Item] = []
    ps = it.phonemes
    while len(ps) > limit:
        cut = ps.rfind(" ", 1, limit + 1)
        cut = limit if cut <= 0 else cut
        out.append(Item(it.text, ps[:cut].strip(), it.char_start, it.char_end, True))
        ps = ps[cut:].strip()
    out.append(
        Item(it.text, ps, it.char_start, it.char_end, it.space_after, it.sentence_end, it.paragraph_end)
    )
    return [o for o in out if o.phonemes] or [it]


def _cut_point(items: list[Item], next_length: int, limit: int) -> int:
    """Index to cut ``items`` at: after the last sentence end, else ':;', else ',—' (the official order)."""
    for level, marks in enumerate(_WATERFALL):
        z = next(
            (
                i
                for i in range(len(items) - 1, -1, -1)
                if _is_punct(items[i].phonemes, marks) or (level == 0 and items[i].sentence_end)
            ),
            None,
        )
        if z is None:
            continue
        z += 1
        while z < len(items) and (_is_punct(items[z].phonemes, _BUMPS) or not items[z].phonemes):
            z += 1
        if z < len(items) and _Buffer.of(items[z:]).length + next_length <= limit:
            return z
    return len(items)


class Chunker:
    """Pack items into PhonemeChunks of at most ``limit`` phonemes (lazily)."""

    def __init__(self, source: str, lang: str, limit: int = MAX_PHONEMES) -> None:
        if limit < 1:
            raise ValueError(f"max_phonemes must be at least 1, got {limit}")
        self.source = source
        self.lang = lang
        self.limit = limit
        self.index = 0

    def _build(self, items: list[Item], paragraph_end: bool) -> PhonemeChunk:
        parts: list[str] = []
        words: list[Word] = []
        length = 0
        space = False
        for it in items:
            start = length
            if it.phonemes:
                if length and space:
                    parts.append(" ")
                    length += 1
                    start = length
                parts.append(it.phonemes)
                length += len(it.phonemes)
                space = it.space_after
            else:
                space = space or it.space_after
            words.append(Word(it.text, it.phonemes, start, length, it.char_start, it.char_end))
        sounding = [it for it in items if it.phonemes]
        last = sounding[-1] if sounding else items[-1]
        chunk = PhonemeChunk(
            text=self.source[items[0].char_start : max(it.char_end for it in items)].strip(),
            phonemes="".join(parts),
            words=tuple(words),
            lang=self.lang,
            sentence_end=last.sentence_end or _is_punct(last.phonemes, _WATERFALL[0]) or paragraph_end,
            paragraph_end=paragraph_end or items[-1].paragraph_end,
            index=self.index,
        )
        self.index += 1
        return chunk

    def __call__(self, items: Iterable[Item]) -> Iterator[PhonemeChunk]:
        buf = _Buffer()
        closed: list[Item] | None = None  # a finished paragraph, held until more sound arrives
        silent: list[Item] = []
        for item in items:
            if not item.phonemes:
                if closed is not None:
                    silent.append(item)
                    continue
                buf.items.append(item)
                buf.space = buf.space or item.space_after
                if item.paragraph_end and buf.has_sound():
                    closed, buf = buf.items, _Buffer()
                continue
            if closed is not None:
                yield self._build(closed, True)
                closed = None
                buf = _Buffer.of(silent)
                silent = []
            for piece in _split_item(item, self.limit) if len(item.phonemes) > self.limit else [item]:
                if buf.length + buf.cost(piece) > self.limit and buf.has_sound():
                    z = _cut_point(buf.items, len(piece.phonemes) + 1, self.limit)  # +1: the space before it
                    yield self._build(buf.items[:z], False)
                    buf = _Buffer.of(buf.items[z:])
                buf.add(piece)
            if item.paragraph_end:
                closed, buf = buf.items, _Buffer()
        if closed is not None:
            yield self._build(closed + silent, True)
        if buf.has_sound():
            yield self._build(buf.items, True)
        elif buf.items and not self.index:
            log.debug("no speakable text in %d words", len(buf.items))
