"""Language codes, aliases, and the registry's lazy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from fe_helpers import needs

from koel.text import LANGUAGES, TextInputError, resolve_language


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("a", "a"),
        ("en-us", "a"),
        ("en", "a"),
        ("EN_US", "a"),
        ("en-gb", "b"),
        ("es", "e"),
        ("fr", "f"),
        ("fr-fr", "f"),
        ("hi", "h"),
        ("it", "i"),
        ("ja", "j"),
        ("pt-br", "p"),
        ("zh", "z"),
        ("cmn", "z"),
        ("Mandarin Chinese", "z"),
        ("British English", "b"),
        (" Japanese ", "j"),
    ],
)
def test_resolve(given: str, code: str) -> None:
    assert resolve_language(given) == code


def test_unknown_language_lists_codes() -> None:
    with pytest.raises(TextInputError) as e:
        resolve_language("klingon")
    assert "'klingon'" in str(e.value)
    for code in LANGUAGES:
        assert f"{code} (" in str(e.value)


def test_languages_table() -> None:
    assert set(LANGUAGES) == set("abefhijpz")
    assert LANGUAGES["a"].name == "American English"
    assert {LANGUAGES[c].espeak for c in "efhip"} == {"es", "fr-fr", "hi", "it", "pt-br"}
    assert all(LANGUAGES[c].code == c for c in LANGUAGES)


@needs("a")
def test_english_does_not_import_cjk_stacks() -> None:
    code = textwrap.dedent(
        """
        import sys
        from koel.text import FrontEnd
        FrontEnd("a").phonemize("Hello there, it is 9:30.")
        heavy = [m for m in ("jieba", "fugashi", "pypinyin", "cn2an", "unidic_lite", "pyopenjtalk") if m in sys.modules]
        print(heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_importing_koel_text_is_light() -> None:
    code = "import sys, koel.text; print(sorted(m for m in ('misaki','spacy','phonemizer','jieba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
