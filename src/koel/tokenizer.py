"""Phoneme string <-> token ids for the Kokoro-82M v1.0 symbol table."""

from __future__ import annotations

from collections.abc import Iterable

from koel.constants import MAX_PHONEMES, PAD_ID

# Positions in the StyleTTS2 symbol table as reused by Kokoro v1.0 (114 symbols; id 0 is the pad).
VOCAB: dict[str, int] = {
    ";": 1,
    ":": 2,
    ",": 3,
    ".": 4,
    "!": 5,
    "?": 6,
    "—": 9,
    "…": 10,
    '"': 11,
    "(": 12,
    ")": 13,
    "“": 14,
    "”": 15,
    " ": 16,
    "̃": 17,
    "ʣ": 18,
    "ʥ": 19,
    "ʦ": 20,
    "ʨ": 21,
    "ᵝ": 22,
    "ꭧ": 23,
    "A": 24,
    "I": 25,
    "O": 31,
    "Q": 33,
    "S": 35,
    "T": 36,
    "W": 39,
    "Y": 41,
    "ᵊ": 42,
    "a": 43,
    "b": 44,
    "c": 45,
    "d": 46,
    "e": 47,
    "f": 48,
    "h": 50,
    "i": 51,
    "j": 52,
    "k": 53,
    "l": 54,
    "m": 55,
    "n": 56,
    "o": 57,
    "p": 58,
    "q": 59,
    "r": 60,
    "s": 61,
    "t": 62,
    "u": 63,
    "v": 64,
    "w": 65,
    "x": 66,
    "y": 67,
    "z": 68,
    "ɑ": 69,
    "ɐ": 70,
    "ɒ": 71,
    "æ": 72,
    "β": 75,
    "ɔ": 76,
    "ɕ": 77,
    "ç": 78,
    "ɖ": 80,
    "ð": 81,
    "ʤ": 82,
    "ə": 83,
    "ɚ": 85,
    "ɛ": 86,
    "ɜ": 87,
    "ɟ": 90,
    "ɡ": 92,
    "ɥ": 99,
    "ɨ": 101,
    "ɪ": 102,
    "ʝ": 103,
    "ɯ": 110,
    "ɰ": 111,
    "ŋ": 112,
    "ɳ": 113,
    "ɲ": 114,
    "ɴ": 115,
    "ø": 116,
    "ɸ": 118,
    "θ": 119,
    "œ": 120,
    "ɹ": 123,
    "ɾ": 125,
    "ɻ": 126,
    "ʁ": 128,
    "ɽ": 129,
    "ʂ": 130,
    "ʃ": 131,
    "ʈ": 132,
    "ʧ": 133,
    "ʊ": 135,
    "ʋ": 136,
    "ʌ": 138,
    "ɣ": 139,
    "ɤ": 140,
    "χ": 142,
    "ʎ": 143,
    "ʒ": 147,
    "ʔ": 148,
    "ˈ": 156,
    "ˌ": 157,
    "ː": 158,
    "ʰ": 162,
    "ʲ": 164,
    "↓": 169,
    "→": 171,
    "↗": 172,
    "↘": 173,
    "ᵻ": 177,
}
ID_TO_SYMBOL: dict[int, str] = {i: s for s, i in VOCAB.items()}
N_TOKEN = 178
"""Rows of the embedding tables (only 115 of them are reachable)."""


class PhonemeError(ValueError):
    """A phoneme string the model cannot take (empty after filtering, or too long)."""


def unknown_symbols(phonemes: str) -> set[str]:
    """Characters of ``phonemes`` that the model does not know (they would be dropped)."""
    return {c for c in phonemes if c not in VOCAB}


def encode(phonemes: str, *, strict: bool = False) -> list[int]:
    """Map a phoneme string to ids (without the boundary tokens).

    Unknown characters are dropped, as the official pipeline does, unless ``strict`` is set.
    """
    if strict:
        bad = unknown_symbols(phonemes)
        if bad:
            raise PhonemeError(f"phonemes contain symbols outside the Kokoro vocabulary: {sorted(bad)!r}")
    return [VOCAB[c] for c in phonemes if c in VOCAB]


def with_boundaries(ids: Iterable[int]) -> list[int]:
    """Wrap ids in the pad/boundary token and check the 510-phoneme limit."""
    body = list(ids)
    if not body:
        raise PhonemeError("no phonemes to speak: the token list is empty")
    if len(body) > MAX_PHONEMES:
        raise PhonemeError(
            f"{len(body)} phonemes exceed the model limit of {MAX_PHONEMES}; split the text into chunks first"
        )
    return [PAD_ID, *body, PAD_ID]


def decode(ids: Iterable[int]) -> str:
    """Map ids back to a phoneme string, skipping pad tokens."""
    return "".join(ID_TO_SYMBOL.get(i, "") for i in ids if i != PAD_ID)
