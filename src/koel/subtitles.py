"""Subtitles from word timestamps: SRT and WebVTT, one cue per sentence (or clause) or per word.

Punctuation arrives as its own WordTimestamp ("Hello", ",", "world", "."): closing marks join the
word before them and opening marks (``( “ ¿``) the word after them, without a space. Spacing
between words follows the source text when the words carry character offsets, so Japanese or
Chinese words are joined without spaces; without offsets, words are joined with a space except
between two characters of scripts written without spaces.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from koel.types import WordTimestamp

SENTENCE_END = ".!?…。！？"
CLAUSE_END = ",;:—–、，；："
CLOSING = "\"')]}”’»」』"
STANDALONE = "&#@*%/\\§¶†‡"
"""Punctuation (Unicode category Po) that stands alone as a word: "Tom & Jerry"."""
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "mt", "ft", "no"})
"""Words whose final period does not end a sentence."""

LINE_CHARS = 42
"""Longest comfortable subtitle line; longer cues are wrapped onto two lines."""

MAX_CHARS = 2 * LINE_CHARS
MAX_DURATION = 7.0
"""Default limits of a sentence-level cue: two lines of text, seven seconds on screen."""


@dataclass(frozen=True)
class Cue:
    """One subtitle: text shown from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    text: str


@dataclass
class _Token:
    """A displayed word: a word with its punctuation attached."""

    text: str
    start: float
    end: float
    space_before: bool


def _kind(text: str, quote_open: bool) -> str:
    """'open' (attaches to the next word), 'close' (to the previous word) or 'word'."""
    if text == '"':
        return "close" if quote_open else "open"
    categories = {unicodedata.category(ch) for ch in text}
    if categories <= {"Ps", "Pi"} or all(ch in "¿¡" for ch in text):
        return "open"
    if categories <= {"Pe", "Pf", "Po"} and not any(ch in STANDALONE for ch in text):
        return "close"
    return "word"


def _spaceless(ch: str) -> bool:
    """True for characters of scripts written without spaces (CJK, kana, Thai, fullwidth forms)."""
    if len(ch) != 1:
        return False
    code = ord(ch)
    return (
        0x3000 <= code <= 0x9FFF  # CJK punctuation, kana, CJK ideographs
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
        or 0x0E00 <= code <= 0x0E7F
        or 0x20000 <= code <= 0x2FA1F
    )


def _tokens(words: Sequence[WordTimestamp]) -> list[_Token]:
    """Attach punctuation to words and decide where spaces go."""
    tokens: list[_Token] = []
    opening, opening_space = "", False  # opening marks waiting for the next word
    quote_open = False  # whether the last straight double quote opened a quotation
    previous, last_end = "", -1  # the previous word or mark, and its source end offset
    for w in words:
        text = " ".join(w.word.split())
        if not text:
            continue
        kind = _kind(text, quote_open)
        quote_open ^= text == '"'
        if last_end >= 0 and w.char_start >= 0:
            space = w.char_start > last_end  # the source text knows
        else:
            space = (
                kind != "close" and not opening and not (_spaceless(previous[-1:]) and _spaceless(text[0]))
            )
        previous, last_end = text, w.char_end
        if kind == "open":
            opening, opening_space = (
                (opening + " " * space + text, opening_space) if opening else (text, space)
            )
        elif kind == "close" and tokens and not opening:
            tokens[-1].text += " " * space + text
            tokens[-1].end = max(tokens[-1].end, w.end)
        elif opening:
            tokens.append(_Token(opening + " " * space + text, w.start, w.end, opening_space))
            opening = ""
        else:
            tokens.append(_Token(text, w.start, w.end, space))
    if opening and tokens:  # a stray opening mark at the very end
        tokens[-1].text += opening
    return tokens


def _join(tokens: Sequence[_Token]) -> str:
    return "".join((" " if i and t.space_before else "") + t.text for i, t in enumerate(tokens))


def _core(text: str) -> str:
    return text.rstrip(CLOSING)


def _ends_sentence(text: str) -> bool:
    core = _core(text)
    if not core or core[-1] not in SENTENCE_END:
        return False
    if core[-1] == ".":
        stem = core.rstrip(".").lstrip("\"'([{“‘«").lower()
        if stem in ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):  # "Mr." and initials
            return False
    return True


def _ends_clause(text: str) -> bool:
    core = _core(text)
    return bool(core) and core[-1] in CLAUSE_END


def _split(tokens: list[_Token], max_chars: int, max_duration: float) -> list[list[_Token]]:
    """Split a sentence that is too long into balanced cues, at a clause boundary where one is central."""
    offsets = [0]  # offsets[i]: characters in the first i tokens
    for i, token in enumerate(tokens):
        offsets.append(offsets[-1] + len(token.text) + (1 if i and token.space_before else 0))
    total, span = offsets[-1], tokens[-1].end - tokens[0].start
    if len(tokens) == 1 or (total <= max_chars and span <= max_duration):
        return [tokens]
    cuts = range(1, len(tokens))
    clauses = [
        i for i in cuts if _ends_clause(tokens[i - 1].text) and total / 4 <= offsets[i] <= 3 * total / 4
    ]
    cut = min(clauses or cuts, key=lambda i: abs(offsets[i] - total / 2))
    return _split(tokens[:cut], max_chars, max_duration) + _split(tokens[cut:], max_chars, max_duration)


def _group(tokens: list[_Token], max_chars: int, max_duration: float) -> list[list[_Token]]:
    """Sentence-level grouping: one cue per sentence, long sentences split into balanced parts."""
    groups: list[list[_Token]] = []
    sentence: list[_Token] = []
    for token in tokens:
        sentence.append(token)
        if _ends_sentence(token.text):
            groups += _split(sentence, max_chars, max_duration)
            sentence = []
    if sentence:
        groups += _split(sentence, max_chars, max_duration)
    return groups


def _wrap(text: str) -> str:
    """Break a long cue onto two lines at the space nearest its middle."""
    if len(text) <= LINE_CHARS or " " not in text:
        return text
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1 :]


def make_cues(
    words: Sequence[WordTimestamp],
    *,
    level: str = "sentence",
    max_chars: int = MAX_CHARS,
    max_duration: float = MAX_DURATION,
) -> list[Cue]:
    """Group words into ordered, non-overlapping cues.

    ``level="sentence"``: a cue per sentence; a sentence longer than ``max_chars`` characters or
    ``max_duration`` seconds is split into balanced parts, at a clause boundary (comma, semicolon,
    colon, dash) when one lies near its middle, else at the word nearest the middle.
    ``level="word"``: a cue per word.
    """
    if level not in ("sentence", "word"):
        raise ValueError(f"subtitle level must be 'sentence' or 'word', not {level!r}")
    if max_chars < 1 or max_duration <= 0:
        raise ValueError(f"max_chars and max_duration must be positive, got {max_chars}, {max_duration}")
    tokens = _tokens(words)
    groups = [[t] for t in tokens] if level == "word" else _group(tokens, max_chars, max_duration)
    cues: list[Cue] = []
    previous_end = 0.0
    for group in groups:
        start = max(group[0].start, previous_end)  # never overlap the cue before
        end = max(max(t.end for t in group), start)
        cues.append(Cue(start, end, _wrap(_join(group)) if level == "sentence" else _join(group)))
        previous_end = end
    return cues


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """``3723.25`` -> ``01:02:03,250`` (SRT); pass ``"."`` for WebVTT."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def to_srt(
    words: Sequence[WordTimestamp],
    *,
    level: str = "sentence",
    max_chars: int = MAX_CHARS,
    max_duration: float = MAX_DURATION,
) -> str:
    """SubRip subtitles for ``words``; see ``make_cues`` for the grouping."""
    cues = make_cues(words, level=level, max_chars=max_chars, max_duration=max_duration)
    return "\n".join(
        f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{c.text}\n"
        for i, c in enumerate(cues, start=1)
    )


def _escape_vtt(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(
    words: Sequence[WordTimestamp],
    *,
    level: str = "sentence",
    max_chars: int = MAX_CHARS,
    max_duration: float = MAX_DURATION,
) -> str:
    """WebVTT subtitles for ``words``; see ``make_cues`` for the grouping."""
    cues = make_cues(words, level=level, max_chars=max_chars, max_duration=max_duration)
    blocks = [
        f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n{_escape_vtt(c.text)}\n"
        for c in cues
    ]
    return "\n".join(["WEBVTT\n", *blocks])
