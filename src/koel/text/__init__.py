"""koel's text front end: normalisation, G2P for the nine Kokoro v1.0 languages, chunking.

>>> from koel.text import FrontEnd, phonemize
>>> phonemize("Hello world!")  # doctest: +SKIP
'həlˈO wˈɜɹld!'

Backends are imported lazily: English never loads the Japanese or Chinese stacks.
"""

from __future__ import annotations

from koel.text.frontend import FrontEnd, phonemize
from koel.text.g2p.base import FrontEndUnavailable
from koel.text.languages import LANGUAGES, LanguageInfo, TextInputError, resolve_language
from koel.text.overrides import Lexicon

__all__ = [
    "LANGUAGES",
    "FrontEnd",
    "FrontEndUnavailable",
    "LanguageInfo",
    "Lexicon",
    "TextInputError",
    "phonemize",
    "resolve_language",
]
