"""Golden table for English normalisation (text -> spoken words) and phoneme-level checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from koel.text.normalize import EnglishNormalizer, normalize_english
from koel.text.spans import Rewritten

DATA = Path(__file__).parent / "data" / "en_normalize.tsv"
ROWS = [
    line.split("\t")
    for line in DATA.read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#")
]
CATEGORIES = {
    "time",
    "date",
    "decimal",
    "version",
    "phone",
    "currency",
    "percent",
    "ordinal",
    "unit",
    "abbreviation",
    "roman",
    "url",
    "email",
    "acronym",
    "range",
    "fraction",
    "sign",
}


def test_table_covers_every_category() -> None:
    assert len(ROWS) >= 30
    assert {r[0] for r in ROWS} >= CATEGORIES


@pytest.mark.parametrize(("category", "text", "expected"), ROWS, ids=[f"{r[0]}:{r[1][:30]}" for r in ROWS])
def test_golden(category: str, text: str, expected: str) -> None:
    assert " ".join(normalize_english(text).split()) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It costs £3.50.", "It costs three pounds and fifty pence."),
        ("Born 05/12/1990.", "Born the fifth of December nineteen ninety."),
        ("It has 105 pages.", "It has one hundred and five pages."),
    ],
)
def test_british(text: str, expected: str) -> None:
    assert " ".join(normalize_english(text, british=True).split()) == expected


def test_spans_map_back_to_source() -> None:
    text = "Pay $5 at 9:30 on Main St."
    rw = Rewritten(EnglishNormalizer()(text))
    assert "five dollars" in rw.text
    i = rw.text.index("dollars")
    assert rw.source(i, i + len("dollars")) == (4, 6)  # the whole "$5"
    j = rw.text.index("Pay")
    assert rw.source(j, j + 3) == (0, 3)


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Who",  # not a date, not a number
        "I saw a cat.",  # the pronoun I is not a Roman numeral
        "The CEO of IBM.",
        "Mix well.",
        "It's a DC comic.",
    ],
)
def test_leaves_plain_text_alone(text: str) -> None:
    out = normalize_english(text)
    assert out.replace("Doctor", "Dr.") == text


def test_no_stray_symbols_in_phonemes(frontend) -> None:
    fe = frontend("a")
    ps = fe.phonemize("Meet at 9:30, or 10:45 p.m.; the ratio is 3:2 and 1/2 of $5.")
    assert ":" not in ps.replace("; ", "")
    plain = frontend("a", normalize=False).phonemize("Meet at 9:30.")
    assert "n\u02c8In:" in plain  # what plain misaki does, for contrast


def test_phonemes_for_a_number_heavy_sentence(frontend) -> None:
    ps = frontend("a").phonemize("On 12/05/2024 at 9:30am it cost $5.50.")
    assert ps == (
        "ˌɔn disˈɛmbəɹ fˈɪfθ, twˈɛnti twˈɛntifˌɔɹ æt nˈIn θˈɜɹTi ˌAˈɛm ɪt kˈɔst fˈIv dˈɑləɹz ænd fˈɪfti sˈɛnts."
    )
