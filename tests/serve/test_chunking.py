"""Streaming chunk sizes with koel's real front end (no model): a short first chunk, same words."""

from __future__ import annotations

import threading

import pytest

from koel.serve.settings import ServerSettings
from koel.serve.synthesis import _RequestPipeline

TEXT = (
    "Dr. Smith paid $5.20 on 3/4/2021. The first sentence is short. The second one, which is longer, goes on "
    "and on with many words, clauses, and commas; it should be cut somewhere because it is far too long for "
    "a small first chunk. Then a third.\n\nA new paragraph starts here!"
)


@pytest.fixture(scope="module")
def english() -> None:
    text = pytest.importorskip("koel.text", reason="needs koel's text front end")
    try:
        text.FrontEnd("a").phonemize("hello")
    except text.FrontEndUnavailable as exc:
        pytest.skip(f"English G2P is not installed: {exc}")


@pytest.mark.parametrize(("first", "rest"), [(40, 120), (100, 250), (510, 510)])
def test_request_chunks_are_short_first_and_keep_every_word_and_offset(kit, english, first, rest):
    from koel.pipeline import Pipeline
    from koel.voices import VoiceStore

    base = Pipeline(kit.FakeEngine(), voice="af_test", voices=VoiceStore(kit.voices, allow_download=False))
    view = _RequestPipeline(
        base, base.engine, threading.Lock(), ServerSettings(first_chunk_phonemes=first, chunk_phonemes=rest)
    )
    sized = list(view.chunks(TEXT, lang="a"))
    plain = list(base.chunks(TEXT, lang="a"))
    limits = [min(rest, first * 2**k) for k in range(len(sized))]  # the caps ramp up to ``rest``
    assert all(len(c.phonemes) <= limit for c, limit in zip(sized, limits, strict=True))
    assert [c.index for c in sized] == list(range(len(sized)))
    words = [(w.text, w.char_start, w.char_end) for c in sized for w in c.words]
    assert words == [(w.text, w.char_start, w.char_end) for c in plain for w in c.words]
    for c in sized:
        for w in c.words:
            if w.text.strip():
                assert TEXT[w.char_start : w.char_end] == w.text
    assert sized[-1].text == "A new paragraph starts here!"
    if first < 100:
        assert len(sized) > len(plain)
