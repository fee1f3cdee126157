"""Japanese G2P: misaki's cutlet path (fugashi + UniDic-lite), the one Kokoro's Japanese voices learnt.

hexgrad's pipeline builds ``misaki.ja.JAG2P()``, whose default version is 'cutlet'; that class
imports pyopenjtalk at module level although the cutlet path never uses it, so this backend uses
``misaki.cutlet.Cutlet`` directly. Latin-script words go to the English G2P (loaded only if needed).
"""

from __future__ import annotations

import logging
from typing import Any

import regex

from koel.text.g2p.base import FrontEndUnavailable, G2PToken, split_overrides

log = logging.getLogger(__name__)

PUNCT_MAP = {
    "。": ".",
    "、": ",",
    "，": ",",
    "．": ".",
    "？": "?",
    "！": "!",
    "：": ":",
    "；": ";",
    "「": "“",
    "」": "”",
    "『": "“",
    "』": "”",
    "（": "(",
    "）": ")",
    "《": "(",
    "》": ")",
    "【": "(",
    "】": ")",
    "〈": "“",
    "〉": "”",
    "«": "“",
    "»": "”",
    "～": "—",
    "〜": "—",
    "—": "—",
    "…": "…",
    "‥": "…",
    "・": "",
    ".": ".",
    ",": ",",
    "?": "?",
    "!": "!",
    ":": ":",
    ";": ";",
    "(": "(",
    ")": ")",
    '"': '"',
    "“": "“",
    "”": "”",
}
_SPLIT = regex.compile(
    r"(?P<p>["
    + regex.escape("".join(PUNCT_MAP))
    + r"])|(?P<lat>[A-Za-z][A-Za-z'’\-]*(?:\s+[A-Za-z][A-Za-z'’\-]*)*)"
)


class JapaneseG2P:
    """Clause-level Japanese phonemes (word timestamps are per clause)."""

    def __init__(self) -> None:
        try:
            from misaki.cutlet import Cutlet
        except ImportError as e:
            raise FrontEndUnavailable(
                f"Japanese G2P needs misaki, fugashi, unidic-lite, jaconv and mojimoji ({e}): "
                "pip install misaki fugashi unidic-lite jaconv mojimoji"
            ) from e
        try:
            self._cutlet: Any = Cutlet()
        except RuntimeError as e:  # fugashi without a dictionary
            raise FrontEndUnavailable(
                f"Japanese G2P needs a MeCab dictionary: pip install unidic-lite ({e})"
            ) from e

    @staticmethod
    def _latin(text: str) -> str:
        from koel.text.g2p import english_word

        return english_word(text)

    def __call__(self, text: str, overrides: list[tuple[int, int, str]]) -> list[G2PToken]:
        out: list[G2PToken] = []

        def space(b: int) -> bool:
            return b < len(text) and text[b].isspace()

        def clause(a: int, b: int) -> None:
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if a < b:
                ps, _ = self._cutlet(text[a:b])
                out.append(G2PToken(text[a:b], ps, space(b), a, b))

        for a, b, ps in split_overrides(text, overrides):
            if ps is not None:
                out.append(G2PToken(text[a:b], ps, space(b), a, b))
                continue
            pos = a
            for m in _SPLIT.finditer(text, a, b):
                clause(pos, m.start())
                if m["p"]:
                    out.append(
                        G2PToken(m.group(0), PUNCT_MAP[m.group(0)], space(m.end()), m.start(), m.end())
                    )
                else:
                    out.append(
                        G2PToken(m.group(0), self._latin(m.group(0)), space(m.end()), m.start(), m.end())
                    )
                pos = m.end()
            clause(pos, b)
        return out
