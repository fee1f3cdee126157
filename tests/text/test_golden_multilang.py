"""Golden tables for the eight other languages: normalised text and phonemes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fe_helpers import have

from koel.text.frontend import get_normalizer
from koel.tokenizer import VOCAB

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_multilang.json").read_text(encoding="utf-8"))
CASES = [(lang, row) for lang, rows in GOLDEN.items() for row in rows]


def test_every_language_has_five_cases() -> None:
    assert set(GOLDEN) == set("befhijpz")
    assert all(len(rows) >= 5 for rows in GOLDEN.values())


@pytest.mark.parametrize(("lang", "row"), CASES, ids=[f"{lang}:{row['text'][:24]}" for lang, row in CASES])
def test_normalized(lang: str, row: dict) -> None:
    if lang == "z" and not have("z"):
        pytest.skip("cn2an not installed")
    assert get_normalizer(lang).text(row["text"]) == row["normalized"]


@pytest.mark.parametrize(("lang", "row"), CASES, ids=[f"{lang}:{row['text'][:24]}" for lang, row in CASES])
def test_phonemes(frontend, lang: str, row: dict) -> None:
    ps = frontend(lang).phonemize(row["text"])
    assert set(ps) <= set(VOCAB)
    assert ps == row["phonemes"]


@pytest.mark.parametrize(
    ("lang", "text", "absent"),
    [
        ("e", "Son las 10:30 y pesa 3,5 kg.", ":"),
        ("f", "Il est 10:30.", ":"),
        ("j", "午前10:30に。", ":"),
        ("z", "上午10:30开会。", ":"),
        ("h", "10:30 बजे", ":"),
    ],
)
def test_no_stray_colons(frontend, lang: str, text: str, absent: str) -> None:
    assert absent not in frontend(lang).phonemize(text)
