"""Inline overrides, user lexicons and raw-phoneme input."""

from __future__ import annotations

import json

import pytest
from fe_helpers import have

from koel.text import FrontEnd, Lexicon, TextInputError, phonemize

pytestmark = pytest.mark.skipif(not have("a"), reason="English G2P packages not installed")


def test_inline_override_misaki_style() -> None:
    fe = FrontEnd("a")
    chunk = next(fe.chunks("[Kokoro](/kˈOkəɹO/) is great."))
    assert chunk.phonemes.startswith("kˈOkəɹO ")
    word = chunk.words[0]
    assert (word.text, word.phonemes) == ("Kokoro", "kˈOkəɹO")
    assert (word.char_start, word.char_end) == (1, 7)


def test_override_with_ascii_g_and_apostrophe_is_fixed() -> None:
    assert phonemize("[gif](/'ɡɪf/)") == "ˈɡɪf"
    assert phonemize("[gig](/gig/)") == "ɡiɡ"


def test_override_in_other_languages() -> None:
    if not have("e"):
        pytest.skip("espeak packages missing")
    ps = FrontEnd("e").phonemize("Hola [koel](/kˈoel/), ¿qué tal?")
    assert "kˈoel" in ps


def test_misaki_stress_hint_passes_through() -> None:
    plain = phonemize("I read it.")
    hinted = phonemize("I [read](-1) it.")
    assert plain != hinted


def test_lexicon_dict_and_case() -> None:
    fe = FrontEnd("a", lexicon={"koel": "kˈOəl", "Spock": "spˈɑk"})
    ps = fe.phonemize("Koel and koel met Spock.")
    assert ps.count("kˈOəl") == 2
    assert "spˈɑk" in ps


def test_lexicon_files(tmp_path) -> None:
    tsv = tmp_path / "lex.tsv"
    tsv.write_text("# my words\nkoel\tkˈOəl\nGIF jˈɪf\n", encoding="utf-8")
    assert "jˈɪf" in FrontEnd("a", lexicon=tsv).phonemize("A GIF by koel.")
    js = tmp_path / "lex.json"
    js.write_text(json.dumps({"a": {"koel": "kˈOəl"}, "e": {"koel": "kˈoel"}}), encoding="utf-8")
    assert "kˈOəl" in FrontEnd("a", lexicon=str(js)).phonemize("koel")
    assert len(Lexicon.load(js, "e")) == 1


def test_bad_lexicons_raise_input_errors(tmp_path) -> None:
    with pytest.raises(TextInputError, match="outside the Kokoro vocabulary"):
        FrontEnd("a", lexicon={"x": "ʘ"})
    with pytest.raises(TextInputError, match="cannot read"):
        FrontEnd("a", lexicon=tmp_path / "missing.tsv")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TextInputError, match="not valid JSON"):
        FrontEnd("a", lexicon=bad)


def test_raw_phoneme_mode() -> None:
    fe = FrontEnd("a")
    text = "həlˈO wˈɜɹld! ʘ ɡʊd"
    chunks = list(fe.chunks(text, raw_phonemes=True))
    assert chunks[0].phonemes == "həlˈO wˈɜɹld! ɡʊd"
    assert [w.text for w in chunks[0].words][:3] == ["həlˈO", "wˈɜɹld", "!"]
    long = "ab " * 600
    chunks = list(fe.chunks(long, raw_phonemes=True))
    assert all(len(c.phonemes) <= 510 for c in chunks) and len(chunks) == 4


def test_input_errors() -> None:
    fe = FrontEnd("a")
    with pytest.raises(TextInputError):
        fe.chunks(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TextInputError):
        fe.chunks("hi", max_phonemes=0)
    with pytest.raises(TextInputError):
        FrontEnd("xx")
    assert list(fe.chunks("")) == []
    assert list(fe.chunks("   \n\n  ")) == []
