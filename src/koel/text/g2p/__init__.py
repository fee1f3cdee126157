"""G2P registry: one backend per Kokoro language, each imported only when first used."""

from __future__ import annotations

import threading
from typing import Any

from koel.text.g2p.base import G2P, FrontEndUnavailable, G2PToken, in_vocab
from koel.text.languages import LANGUAGES, resolve_language

__all__ = ["G2P", "FrontEndUnavailable", "G2PToken", "get_g2p", "in_vocab"]

_CACHE: dict[str, G2P] = {}
_LOCK = threading.RLock()


def _build(code: str) -> G2P:
    info = LANGUAGES[code]
    if info.backend == "misaki-en":
        from koel.text.g2p.english import EnglishG2P

        return EnglishG2P(british=code == "b")
    if info.backend == "espeak":
        from koel.text.g2p.espeak import EspeakG2P

        assert info.espeak is not None
        return EspeakG2P(info.espeak)
    if info.backend == "misaki-ja":
        from koel.text.g2p.japanese import JapaneseG2P

        return JapaneseG2P()
    if info.backend == "misaki-zh":
        from koel.text.g2p.chinese import ChineseG2P

        return ChineseG2P()
    raise AssertionError(f"no G2P backend {info.backend!r}")


def english_word(text: str) -> str:
    """Phonemes of a Latin-script word inside another language's text (American English G2P)."""
    english: Any = get_g2p("a")  # the English back end reads single words too
    return str(english.word(text))


def get_g2p(lang: str) -> G2P:
    """The (shared, lazily built) G2P backend for a language code or name."""
    code = resolve_language(lang)
    with _LOCK:
        if code not in _CACHE:
            _CACHE[code] = _build(code)
        return _CACHE[code]
