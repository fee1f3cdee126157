"""Mandarin G2P: misaki's legacy ZHG2P path (jieba words, pypinyin, pinyin -> IPA with tone arrows).

hexgrad's pipeline uses ``ZHG2P(version=None)`` for Kokoro-82M v1.0, i.e. ``legacy_call``: jieba
segments each run of Han characters and every word becomes IPA with tone marks. This backend does the
same per jieba word (so each word keeps its phonemes); digits go through cn2an as misaki does, and
Latin-script words go to the English G2P (loaded only if needed).
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

import regex

from koel.text.g2p.base import FrontEndUnavailable, G2PToken, split_overrides

log = logging.getLogger(__name__)

PUNCT_MAP = {
    "、": ",",
    "，": ",",
    "。": ".",
    "．": ".",
    "！": "!",
    "：": ":",
    "；": ";",
    "？": "?",
    "«": "“",
    "»": "”",
    "《": "“",
    "》": "”",
    "「": "“",
    "」": "”",
    "【": "“",
    "】": "”",
    "『": "“",
    "』": "”",
    "（": "(",
    "）": ")",
    "—": "—",
    "…": "…",
    "～": "—",
    ",": ",",
    ".": ".",
    "!": "!",
    "?": "?",
    ":": ":",
    ";": ";",
    "(": "(",
    ")": ")",
    '"': '"',
    "“": "“",
    "”": "”",
}
_RUNS = regex.compile(
    r"(?P<han>[\p{Han}]+)|(?P<num>[-−+]?\d+(?:[.,]\d+)*[%％]?)"
    r"|(?P<lat>[A-Za-z][A-Za-z'’\-]*(?:\s+[A-Za-z][A-Za-z'’\-]*)*)|(?P<p>["
    + regex.escape("".join(PUNCT_MAP))
    + r"])"
)


class ChineseG2P:
    """Word-level Mandarin phonemes in misaki's (Kokoro v1.0) conventions."""

    def __init__(self) -> None:
        try:
            import cn2an
            import jieba
            from misaki.zh import ZHG2P
        except ImportError as e:
            raise FrontEndUnavailable(
                f"Chinese G2P needs misaki, jieba, pypinyin, cn2an and ordered-set ({e}): "
                "pip install misaki jieba pypinyin cn2an ordered-set"
            ) from e
        jieba.setLogLevel(logging.WARNING)
        self._jieba: Any = jieba
        self._cn2an: Any = cn2an
        self._word2ipa = ZHG2P.word2ipa

    @staticmethod
    def _latin(text: str) -> str:
        from koel.text.g2p import english_word

        return english_word(text)

    def _han(self, text: str, a: int, b: int) -> list[G2PToken]:
        out, pos = [], a
        for w in self._jieba.lcut(text[a:b], cut_all=False):
            ps = self._word2ipa(w).replace(chr(815), "")
            out.append(G2PToken(w, ps, True, pos, pos + len(w)))  # legacy_call joins words with spaces
            pos += len(w)
        if out:
            out[-1].space_after = b < len(text) and text[b].isspace()
        return out

    def number(self, s: str) -> str:
        """Digits as Han numerals (cn2an, as misaki does before G2P)."""
        s = unicodedata.normalize("NFKC", s).replace(",", "").replace("−", "-")
        try:
            return str(self._cn2an.transform(s, "an2cn"))
        except (ValueError, KeyError, IndexError) as e:
            log.debug("cn2an could not read %r: %s", s, e)
            return "".join("零一二三四五六七八九"[int(c)] if c.isdigit() else c for c in s)

    def __call__(self, text: str, overrides: list[tuple[int, int, str]]) -> list[G2PToken]:
        out: list[G2PToken] = []
        for a, b, ps in split_overrides(text, overrides):
            if ps is not None:
                out.append(G2PToken(text[a:b], ps, b < len(text) and text[b].isspace(), a, b))
                continue
            for m in _RUNS.finditer(text, a, b):
                space = m.end() < len(text) and text[m.end()].isspace()
                if m["han"]:
                    out.extend(self._han(text, m.start(), m.end()))
                elif m["num"]:
                    han = self.number(m.group(0))
                    ps = " ".join(self._word2ipa(w).replace(chr(815), "") for w in self._jieba.lcut(han))
                    out.append(G2PToken(m.group(0), ps, space, m.start(), m.end()))
                elif m["lat"]:
                    out.append(G2PToken(m.group(0), self._latin(m.group(0)), space, m.start(), m.end()))
                else:  # misaki's map_punctuation puts a space after every mark but opening ones
                    mark = PUNCT_MAP[m.group(0)]
                    out.append(G2PToken(m.group(0), mark, mark not in "“(", m.start(), m.end()))
        return out
