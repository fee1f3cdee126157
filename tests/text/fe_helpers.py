"""Helpers for the front-end tests: which backends are installed, and the checks every chunk stream must pass."""

from __future__ import annotations

import importlib.util

import pytest
import regex

from koel.constants import MAX_PHONEMES
from koel.tokenizer import VOCAB
from koel.types import PhonemeChunk

# The backend packages each language needs; a language whose packages are missing is skipped.
NEEDS = {
    "a": ("misaki", "spacy", "phonemizer", "espeakng_loader"),
    "b": ("misaki", "spacy", "phonemizer", "espeakng_loader"),
    "e": ("misaki", "phonemizer", "espeakng_loader"),
    "f": ("misaki", "phonemizer", "espeakng_loader"),
    "h": ("misaki", "phonemizer", "espeakng_loader"),
    "i": ("misaki", "phonemizer", "espeakng_loader"),
    "p": ("misaki", "phonemizer", "espeakng_loader"),
    "j": ("misaki", "fugashi", "unidic_lite", "jaconv", "mojimoji"),
    "z": ("misaki", "jieba", "pypinyin", "cn2an", "ordered_set"),
}


def have(lang: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in NEEDS[lang])


def needs(lang: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not have(lang), reason=f"G2P packages for {lang!r} not installed: {NEEDS[lang]}"
    )


_OVERRIDE = regex.compile(r"\[([^\[\]\n]+)\]\(\s*/[^()\n]*/\s*\)")


def check_chunks(
    text: str, chunks: list[PhonemeChunk], limit: int = MAX_PHONEMES, complete: bool = True
) -> None:
    """Size, vocabulary, word maps, order, and that every input word lies in some chunk."""
    covered: list[tuple[int, int]] = []
    for i, c in enumerate(chunks):
        assert c.index == i
        assert 0 < len(c.phonemes) <= limit, (len(c.phonemes), c.phonemes[:80])
        assert set(c.phonemes) <= set(VOCAB), sorted(set(c.phonemes) - set(VOCAB))
        assert c.phonemes == c.phonemes.strip()
        last_ph = 0
        for w in c.words:
            assert c.phonemes[w.ph_start : w.ph_end] == w.phonemes, (w, c.phonemes)
            assert w.ph_start >= last_ph
            last_ph = w.ph_end
            assert 0 <= w.char_start <= w.char_end <= len(text)
            assert text[w.char_start : w.char_end] == w.text
            covered.append((w.char_start, w.char_end))
    mask = bytearray(len(text))
    for a, b in covered:
        mask[a:b] = b"\x01" * (b - a)
    for m in _OVERRIDE.finditer(text):  # override syntax is markup, not words: "[koel](/kˈOəl/)"
        mask[m.start() : m.start(1)] = b"\x01" * (m.start(1) - m.start())
        mask[m.end(1) : m.end()] = b"\x01" * (m.end() - m.end(1))
    if chunks and complete:
        for m in regex.finditer(r"\S+", text):
            lost = [i for i in range(m.start(), m.end()) if not mask[i] and not _ignorable(text[i])]
            assert not lost, f"input word {m.group(0)[:40]!r} not in any chunk"


def _ignorable(ch: str) -> bool:
    # Characters the front end turns into spaces on purpose (controls, surrogates, BOM).
    return bool(regex.match(r"[\p{Cc}\p{Cs}\ufeff\ufffe\uffff\u2028\u2029]", ch))
