"""What every G2P backend returns, and the filter that keeps phonemes inside the model's vocabulary."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from koel.tokenizer import VOCAB

log = logging.getLogger(__name__)

PUNCTUATION = frozenset(';:,.!?—…"()“”')
"""Punctuation symbols of the vocabulary (they make pauses and intonation)."""
_SEEN_UNKNOWN: set[str] = set()


class FrontEndUnavailable(RuntimeError):
    """A G2P backend's packages are missing or broken; the message names what to install."""


@dataclass
class G2PToken:
    """One word (or punctuation mark, or clause) of a backend's input with its phonemes.

    ``start:end`` index the backend's input text; -1 means "find ``text`` after the previous token".
    """

    text: str
    phonemes: str
    space_after: bool = True
    start: int = -1
    end: int = -1


class G2P(Protocol):
    """A language's grapheme-to-phoneme converter."""

    def __call__(self, text: str, overrides: list[tuple[int, int, str]]) -> list[G2PToken]:
        """Tokens of ``text`` in order; ``overrides`` are ``(start, end, phonemes)`` to use as given."""
        ...


def in_vocab(phonemes: str) -> str:
    """Drop symbols the model does not know (logged once each); ASCII g becomes ɡ."""
    if all(c in VOCAB for c in phonemes):
        return phonemes
    phonemes = phonemes.replace("g", "ɡ")
    out = []
    for c in phonemes:
        if c in VOCAB:
            out.append(c)
        elif c not in _SEEN_UNKNOWN:
            _SEEN_UNKNOWN.add(c)
            log.debug("dropping phoneme symbol %r (U+%04X): not in the Kokoro vocabulary", c, ord(c))
    return "".join(out)


def locate(tokens: list[G2PToken], text: str) -> list[G2PToken]:
    """Fill in ``start``/``end`` of tokens that lack them by finding their text in order."""
    pos = 0
    for tk in tokens:
        if tk.start < 0:
            i = text.find(tk.text, pos) if tk.text else -1
            if i < 0:
                tk.start = tk.end = pos
            else:
                tk.start, tk.end = i, i + len(tk.text)
        pos = max(pos, tk.end)
    return tokens


def split_overrides(text: str, overrides: list[tuple[int, int, str]]) -> list[tuple[int, int, str | None]]:
    """``text`` as ``(start, end, phonemes or None)`` pieces: overrides and the plain text between them."""
    out: list[tuple[int, int, str | None]] = []
    pos = 0
    for a, b, ps in sorted(overrides):
        if a < pos:
            continue
        if a > pos:
            out.append((pos, a, None))
        out.append((a, b, ps))
        pos = b
    if pos < len(text):
        out.append((pos, len(text), None))
    return out
