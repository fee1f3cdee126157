"""Pronunciation control: inline ``[word](/phonemes/)`` overrides and per-language user lexicons."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import regex

from koel.text.languages import TextInputError
from koel.text.spans import Span
from koel.tokenizer import VOCAB

log = logging.getLogger(__name__)

# misaki's link syntax: [text](/phonemes/) replaces the pronunciation; [text](+1), [text](-0.5) and
# [text](#flags#) are misaki stress/number hints that only the English backend understands.
_LINK = regex.compile(r"\[([^\[\]\n]+)\]\(([^()\n]*)\)")
_STRESS = regex.compile(r"^(?:[+-]?\d+(?:\.5)?|[+-]?0?\.5|#[^#]*#)$")
_FIXES = {"g": "ɡ", "'": "ˈ"}


def clean_user_phonemes(ps: str, *, where: str, strict: bool) -> str:
    """User-typed phonemes mapped onto the model's symbols (ASCII g -> ɡ, ' -> ˈ).

    With ``strict`` any other unknown symbol is a TextInputError; otherwise it is dropped and logged.
    """
    ps = "".join(_FIXES.get(c, c) if c not in VOCAB else c for c in ps).strip()
    bad = sorted({c for c in ps if c not in VOCAB})
    if bad:
        if strict:
            raise TextInputError(
                f"{where}: phonemes {ps!r} use symbols outside the Kokoro vocabulary: {bad}; "
                "see koel.tokenizer.VOCAB for the 114 symbols the model knows"
            )
        log.warning("%s: dropping symbols outside the Kokoro vocabulary: %s", where, bad)
        ps = "".join(c for c in ps if c in VOCAB)
    return ps


class Lexicon:
    """User word -> phonemes table; matched on whole words, exact case first, then case-insensitively."""

    def __init__(self, entries: Mapping[str, str], *, source: str = "lexicon") -> None:
        self.exact: dict[str, str] = {}
        self.lower: dict[str, str] = {}
        for word, ps in entries.items():
            if not isinstance(word, str) or not isinstance(ps, str) or not word.strip():
                raise TextInputError(
                    f"{source}: entries must map words to phoneme strings, got {word!r}: {ps!r}"
                )
            word = word.strip()
            ps = clean_user_phonemes(ps, where=f"{source} entry {word!r}", strict=True)
            self.exact[word] = ps
            self.lower.setdefault(word.lower(), ps)
        keys = sorted(self.exact, key=len, reverse=True)
        self._pattern = (
            regex.compile(
                r"(?<![\w])(?:" + "|".join(regex.escape(k) for k in keys) + r")(?![\w])", regex.IGNORECASE
            )
            if keys
            else None
        )

    def __len__(self) -> int:
        return len(self.exact)

    def get(self, word: str) -> str | None:
        return self.exact.get(word, self.lower.get(word.lower()))

    def find(self, text: str, start: int, end: int) -> list[tuple[int, int, str]]:
        """``(start, end, phonemes)`` of every lexicon word in ``text[start:end]``."""
        if self._pattern is None:
            return []
        out = []
        for m in self._pattern.finditer(text, start, end):
            ps = self.get(m.group(0))
            if ps is not None:
                out.append((m.start(), m.end(), ps))
        return out

    @classmethod
    def load(cls, src: Mapping[str, str] | str | Path | None, lang: str) -> Lexicon | None:
        """A lexicon from a dict or a file.

        Files are JSON (``{"word": "phonemes"}``, or ``{"a": {...}, "j": {...}}`` keyed by language
        code) or plain text with one ``word<TAB>phonemes`` (or ``word phonemes``) entry a line; lines
        starting with ``#`` are comments.
        """
        if src is None:
            return None
        if isinstance(src, Mapping):
            return cls(src)
        path = Path(src)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as e:
            raise TextInputError(f"cannot read lexicon file {str(path)!r}: {e}") from e
        if path.suffix.lower() == ".json" or raw.lstrip().startswith("{"):
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as e:
                raise TextInputError(f"lexicon file {str(path)!r} is not valid JSON: {e}") from e
            if not isinstance(data, dict):
                raise TextInputError(f"lexicon file {str(path)!r} must hold a JSON object")
            if data and all(isinstance(v, dict) for v in data.values()):
                data = data.get(lang, {})
            return cls(data, source=str(path))
        entries: dict[str, str] = {}
        for n, line in enumerate(raw.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, sep, ps = line.partition("\t") if "\t" in line else line.rpartition(" ")
            if not sep or not word.strip() or not ps.strip():
                raise TextInputError(f"{path}:{n}: expected 'word<TAB>phonemes', got {line!r}")
            entries[word.strip()] = ps.strip()
        return cls(entries, source=str(path))


@dataclass(frozen=True)
class Marked:
    """A sentence split into plain text, overrides and misaki hints (see ``mark``)."""

    spans: list[Span]
    """Plain spans are verbatim with no phonemes; overrides carry phonemes; hints are non-verbatim."""
    markup: list[tuple[int, int]]
    """Source ranges that are override syntax (brackets, phoneme specs): never spoken, never words."""


def _lexicon_spans(text: str, start: int, end: int, lexicon: Lexicon | None) -> list[Span]:
    spans: list[Span] = []
    pos = start
    for a, b, ps in lexicon.find(text, start, end) if lexicon else []:
        if a > pos:
            spans.append(Span(text[pos:a], pos, a))
        spans.append(Span(text[a:b], a, b, False, ps))
        pos = b
    if pos < end:
        spans.append(Span(text[pos:end], pos, end))
    return spans


def mark(text: str, start: int, end: int, lexicon: Lexicon | None, *, english: bool) -> Marked:
    """Find inline overrides and lexicon words in ``text[start:end]``."""
    spans: list[Span] = []
    markup: list[tuple[int, int]] = []
    pos = start
    for m in _LINK.finditer(text, start, end):
        spec = m.group(2).strip()
        is_ps = len(spec) > 1 and spec.startswith("/") and spec.endswith("/")
        if not is_ps and not (english and _STRESS.match(spec)):
            continue
        spans.extend(_lexicon_spans(text, pos, m.start(), lexicon))
        if is_ps:
            ps = clean_user_phonemes(spec[1:-1], where=f"override {m.group(0)!r}", strict=False)
            a, b = m.start(1), m.end(1)
            spans.append(Span(text[a:b], a, b, False, ps))
            markup += [(m.start(), a), (b, m.end())]
        else:
            spans.append(Span(m.group(0), m.start(), m.end(), False))
        pos = m.end()
    spans.extend(_lexicon_spans(text, pos, end, lexicon))
    return Marked(spans, markup)
