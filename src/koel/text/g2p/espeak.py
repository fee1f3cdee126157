"""espeak-ng G2P for Spanish, French, Hindi, Italian and Brazilian Portuguese, in misaki's conventions.

Kokoro's non-English (non-CJK) voices were trained on misaki's ``EspeakG2P``: espeak-ng IPA with tie
bars, then a few symbol merges (t͡ʃ -> ʧ, a͡ɪ -> I, ...). This backend uses that class's espeak setup
and merge table, but splits the text at punctuation itself (as phonemizer does internally) so that it
knows which phonemes belong to which words, for word timestamps.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from typing import Any

import regex

from koel.text.g2p.base import FrontEndUnavailable, G2PToken, split_overrides

log = logging.getLogger(__name__)

# phonemizer's punctuation marks, plus CJK and Devanagari sentence marks, to Kokoro punctuation.
PUNCT_MAP = {
    ";": ";",
    ":": ":",
    ",": ",",
    ".": ".",
    "!": "!",
    "?": "?",
    "¡": "",
    "¿": "",
    "—": "—",
    "–": "—",
    "…": "…",
    '"': '"',
    "«": "“",
    "»": "”",
    "“": "“",
    "”": "”",
    "„": "“",
    "(": "(",
    ")": ")",
    "[": "(",
    "]": ")",
    "{": "(",
    "}": ")",
    "।": ".",
    "॥": ".",
    "、": ",",
    "，": ",",
    "。": ".",
    "！": "!",
    "？": "?",
    "：": ":",
    "；": ";",
}
_PUNCT_RE = regex.compile("[" + regex.escape("".join(PUNCT_MAP)) + "]+")
_WORD_RE = regex.compile(r"\S+")

#: Scripts whose letters espeak-ng's voices read (as words, or as letter names). A letter of any other
#: script it spells out by its code point, which is no speech, and its Hindi voice crashed the process
#: on such a letter after "÷-" or "×-" (e.g. "÷-中", "×-ሀ": a segmentation fault found by the property
#: tests). Those letters go to espeak as spaces.
READ_SCRIPTS = frozenset({"LATIN", "GREEK", "CYRILLIC", "ARABIC", "DEVANAGARI"})


@functools.lru_cache(maxsize=8192)
def _unread(c: str) -> bool:
    """Whether ``c`` is a letter of a script outside :data:`READ_SCRIPTS`."""
    return (
        unicodedata.category(c).startswith("L")
        and unicodedata.name(c, "").split(" ", 1)[0] not in READ_SCRIPTS
    )


def readable(clause: str) -> str:
    """``clause`` with the letters espeak-ng cannot read (:data:`READ_SCRIPTS`) as spaces."""
    return "".join(" " if _unread(c) else c for c in clause)


def punctuation_tokens(text: str, start: int, end: int) -> list[G2PToken]:
    """One token per punctuation mark in ``text[start:end]``."""
    out = []
    for i in range(start, end):
        c = text[i]
        if c.isspace():
            continue
        out.append(G2PToken(c, PUNCT_MAP.get(c, ""), i + 1 < len(text) and text[i + 1].isspace(), i, i + 1))
    return out


class EspeakG2P:
    """misaki's espeak-ng G2P for one espeak voice ('es', 'fr-fr', 'hi', 'it', 'pt-br')."""

    def __init__(self, voice: str) -> None:
        try:
            from misaki import espeak
        except ImportError as e:
            raise FrontEndUnavailable(
                f"espeak-ng G2P needs misaki, phonemizer-fork and espeakng-loader ({e}): "
                "pip install misaki phonemizer-fork espeakng-loader"
            ) from e
        self.voice = voice
        self._misaki: Any = espeak.EspeakG2P(language=voice)
        self._backend = self._misaki.backend
        self._e2m: list[tuple[str, str]] = list(self._misaki.e2m)

    def _post(self, ps: str) -> str:
        # The same merges as misaki.espeak.EspeakG2P.__call__ (version None).
        ps = ps.strip()
        for old, new in self._e2m:
            ps = ps.replace(old, new)
        return ps.replace("^", "").replace("-", "")

    def phonemize(self, clauses: list[str]) -> list[str]:
        """espeak-ng phonemes of each clause (no punctuation inside), in one call."""
        if not clauses:
            return []
        raw = self._backend.phonemize([readable(c) for c in clauses], strip=True)
        return [self._post(p) for p in raw]

    def __call__(self, text: str, overrides: list[tuple[int, int, str]]) -> list[G2PToken]:
        pieces: list[tuple[int, int]] = []  # plain clauses to phonemize
        layout: list[G2PToken | tuple[int, int]] = []
        for a, b, ps in split_overrides(text, overrides):
            if ps is not None:
                layout.append(G2PToken(text[a:b], ps, b < len(text) and text[b].isspace(), a, b))
                continue
            pos = a
            for m in _PUNCT_RE.finditer(text, a, b):
                if text[pos : m.start()].strip():
                    pieces.append((pos, m.start()))
                    layout.append((pos, m.start()))
                layout.extend(punctuation_tokens(text, m.start(), m.end()))
                pos = m.end()
            if text[pos:b].strip():
                pieces.append((pos, b))
                layout.append((pos, b))
        phonemes = dict(zip(pieces, self.phonemize([text[a:b].strip() for a, b in pieces]), strict=True))
        out: list[G2PToken] = []
        for item in layout:
            if isinstance(item, G2PToken):
                out.append(item)
            else:
                out.extend(self._align(text, item[0], item[1], phonemes[item]))
        return out

    def _align(self, text: str, start: int, end: int, ps: str) -> list[G2PToken]:
        """Give each word of a clause its phonemes; one token for the clause when that is unclear."""
        words = list(_WORD_RE.finditer(text, start, end))
        ph_words = ps.split()

        def tok(a: int, b: int, p: str) -> G2PToken:
            return G2PToken(text[a:b], p, b < len(text) and text[b].isspace(), a, b)

        if len(words) == len(ph_words):
            return [tok(w.start(), w.end(), p) for w, p in zip(words, ph_words, strict=True)]
        counts = [len(p.split()) for p in self.phonemize([w.group(0) for w in words])]
        if sum(counts) == len(ph_words):
            out, k = [], 0
            for w, n in zip(words, counts, strict=True):
                out.append(tok(w.start(), w.end(), " ".join(ph_words[k : k + n])))
                k += n
            return out
        return [tok(words[0].start(), words[-1].end(), ps)] if words else []
