"""The nine languages of Kokoro v1.0, their codes and aliases, and the one input error."""

from __future__ import annotations

from dataclasses import dataclass


class TextInputError(ValueError):
    """Input the front end cannot take: a non-string text, an unknown language, a bad lexicon.

    It is the only exception the front end raises on purpose; anything else is a bug.
    """


@dataclass(frozen=True)
class LanguageInfo:
    """One language of Kokoro v1.0 and how the front end phonemises it."""

    code: str
    """Kokoro's one-letter language code ('a', 'b', 'e', ...); also the first letter of voice names."""
    name: str
    backend: str
    """G2P backend id: 'misaki-en', 'espeak', 'misaki-ja' or 'misaki-zh'."""
    espeak: str | None = None
    """espeak-ng voice for backend 'espeak' (and the English fallback for out-of-vocabulary words)."""
    aliases: tuple[str, ...] = ()


LANGUAGES: dict[str, LanguageInfo] = {
    "a": LanguageInfo(
        "a",
        "American English",
        "misaki-en",
        "en-us",
        ("en-us", "en", "en_us", "english", "us", "american", "american english", "eng"),
    ),
    "b": LanguageInfo(
        "b",
        "British English",
        "misaki-en",
        "en-gb",
        ("en-gb", "en_gb", "gb", "uk", "british", "british english"),
    ),
    "e": LanguageInfo(
        "e", "Spanish", "espeak", "es", ("es", "es-es", "spa", "spanish", "español", "espanol")
    ),
    "f": LanguageInfo(
        "f",
        "French",
        "espeak",
        "fr-fr",
        ("fr-fr", "fr", "fr_fr", "fra", "fre", "french", "français", "francais"),
    ),
    "h": LanguageInfo("h", "Hindi", "espeak", "hi", ("hi", "hi-in", "hin", "hindi", "हिन्दी", "हिंदी")),
    "i": LanguageInfo("i", "Italian", "espeak", "it", ("it", "it-it", "ita", "italian", "italiano")),
    "j": LanguageInfo("j", "Japanese", "misaki-ja", None, ("ja", "ja-jp", "jp", "jpn", "japanese", "日本語")),
    "p": LanguageInfo(
        "p",
        "Brazilian Portuguese",
        "espeak",
        "pt-br",
        ("pt-br", "pt", "pt_br", "por", "portuguese", "brazilian portuguese", "português", "portugues"),
    ),
    "z": LanguageInfo(
        "z",
        "Mandarin Chinese",
        "misaki-zh",
        None,
        (
            "zh",
            "zh-cn",
            "zh_cn",
            "cmn",
            "zho",
            "chi",
            "chinese",
            "mandarin",
            "mandarin chinese",
            "中文",
            "普通话",
        ),
    ),
}

_LOOKUP: dict[str, str] = {}
for _info in LANGUAGES.values():
    for _key in (_info.code, _info.name.lower(), *_info.aliases):
        _LOOKUP[_key.lower()] = _info.code


def resolve_language(code_or_name: str) -> str:
    """Map a language code, BCP-47-ish tag or name to Kokoro's one-letter code.

    >>> resolve_language("en-GB")
    'b'

    Raises TextInputError (naming the input and listing the valid codes) for anything unknown.
    """
    if not isinstance(code_or_name, str):
        raise TextInputError(f"language must be a string, got {type(code_or_name).__name__}")
    key = code_or_name.strip().lower().replace("_", "-")
    code = _LOOKUP.get(key) or _LOOKUP.get(key.replace("-", "_"))
    if code is None:
        valid = ", ".join(f"{c} ({i.name}: {', '.join(i.aliases[:2])})" for c, i in LANGUAGES.items())
        raise TextInputError(f"unknown language {code_or_name!r}; valid codes are: {valid}")
    return code
