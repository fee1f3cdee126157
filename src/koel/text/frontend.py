"""FrontEnd: text -> sentences -> normalised words -> G2P -> chunks of at most 510 phonemes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import regex

from koel.constants import MAX_PHONEMES
from koel.text.g2p import G2PToken, get_g2p, in_vocab
from koel.text.g2p.base import PUNCTUATION
from koel.text.languages import LANGUAGES, TextInputError, resolve_language
from koel.text.overrides import Lexicon, clean_user_phonemes, mark
from koel.text.rules import RuleNormalizer
from koel.text.segment import Chunker, Item, Sentence, sentences
from koel.text.spans import Rewritten, Span
from koel.types import PhonemeChunk

log = logging.getLogger(__name__)

# Characters that would upset a G2P backend but carry no text: control characters, lone surrogates,
# byte-order marks, non-characters. Each becomes a space, so every offset still points into the input.
_JUNK = regex.compile(r"[\p{Cc}\p{Cs}\ufeff\ufffe\uffff\u2028\u2029]")
_SPACES = regex.compile(r"\s")
_RAW_SPLIT = regex.compile(r"[;:,.!?—…\"()“”]+|[^;:,.!?—…\"()“”\s]+")
_WORDLIKE = regex.compile(r"[\p{L}\p{N}]")
# What third-party G2P back ends raise when a sentence trips them up (then: word by word, or silence).
_G2P_ERRORS = (ValueError, KeyError, IndexError, AssertionError, AttributeError, TypeError, RuntimeError)
_NORMALIZERS: dict[str, RuleNormalizer] = {}
_NORM_LOCK = threading.Lock()


def get_normalizer(code: str) -> RuleNormalizer:
    """The (shared) text normaliser for a language code."""
    with _NORM_LOCK:
        if code not in _NORMALIZERS:
            if code in "ab":
                from koel.text.normalize import EnglishNormalizer

                _NORMALIZERS[code] = EnglishNormalizer(british=code == "b")
            elif code == "j":
                from koel.text.normalize_cjk import JapaneseNormalizer

                _NORMALIZERS[code] = JapaneseNormalizer()
            elif code == "z":
                from koel.text.normalize_cjk import ChineseNormalizer

                _NORMALIZERS[code] = ChineseNormalizer()
            else:
                from koel.text.normalize_intl import IntlNormalizer

                _NORMALIZERS[code] = IntlNormalizer(code)
        return _NORMALIZERS[code]


def _keep_newlines(m: regex.Match) -> str:
    return "\n" if m.group(0) in "\n\u2028\u2029" else " "


class FrontEnd:
    """Text to phoneme chunks for one language.

    >>> fe = FrontEnd("a")
    >>> [c.phonemes for c in fe.chunks("It's 9:30.")]  # doctest: +SKIP
    ['ɪts nˈIn θˈɜɹTi.']

    ``lexicon`` maps words to phonemes (a dict, or a JSON/TSV file, see ``Lexicon.load``);
    ``normalize=False`` gives plain misaki/espeak behaviour (no number, date or symbol rewriting).
    """

    def __init__(
        self,
        lang: str = "a",
        lexicon: Mapping[str, str] | str | Path | None = None,
        normalize: bool = True,
    ) -> None:
        self.lang = resolve_language(lang)
        self.info = LANGUAGES[self.lang]
        self.normalize = bool(normalize)
        self.lexicon = Lexicon.load(lexicon, self.lang)
        self._g2p: Any = None

    def __repr__(self) -> str:
        lex = f", lexicon={len(self.lexicon)} words" if self.lexicon else ""
        return f"FrontEnd({self.lang!r} {self.info.name}{lex}, normalize={self.normalize})"

    @property
    def g2p(self) -> Any:
        if self._g2p is None:
            self._g2p = get_g2p(self.lang)
        return self._g2p

    def chunks(
        self, text: str, *, raw_phonemes: bool = False, max_phonemes: int = MAX_PHONEMES
    ) -> Iterator[PhonemeChunk]:
        """Chunks of at most ``max_phonemes`` phonemes, produced lazily sentence by sentence.

        With ``raw_phonemes`` the text is already phonemes (symbols outside the vocabulary are dropped).
        A chunk never has empty phonemes: words that make no sound (emoji, unknown scripts) ride in a
        neighbouring chunk with empty phonemes, and a text with nothing speakable yields no chunk.
        Raises TextInputError for a non-string text or a bad ``max_phonemes``.
        """
        if not isinstance(text, str):
            raise TextInputError(f"text must be a str, got {type(text).__name__}")
        if (
            isinstance(max_phonemes, bool)
            or not isinstance(max_phonemes, int)
            or not 1 <= max_phonemes <= MAX_PHONEMES
        ):
            raise TextInputError(
                f"max_phonemes must be an int from 1 to {MAX_PHONEMES}, got {max_phonemes!r}"
            )
        clean = _JUNK.sub(_keep_newlines, text)
        items = self._raw_items(text, clean) if raw_phonemes else self._items(text, clean)
        return Chunker(text, self.lang, max_phonemes)(items)

    def phonemize(self, text: str, **kw: Any) -> str:
        """All phonemes of ``text`` (chunks joined by a space)."""
        return " ".join(c.phonemes for c in self.chunks(text, **kw))

    # -- text mode ---------------------------------------------------------------------------------

    def _items(self, text: str, clean: str) -> Iterator[Item]:
        """Items of ``text``; ``clean`` is the same text with junk characters turned into spaces."""
        flat = _SPACES.sub(" ", clean)  # newlines matter to sentences only; offsets stay the same
        for sent in sentences(clean):
            yield from self._sentence(text, clean, flat, sent)

    def _sentence(self, text: str, clean: str, flat: str, sent: Sentence) -> list[Item]:
        marked = mark(flat, sent.start, sent.end, self.lexicon, english=self.lang in "ab")
        spans: list[Span] = []
        for sp in marked.spans:
            if self.normalize and sp.verbatim and sp.phonemes is None:
                spans.extend(get_normalizer(self.lang)(sp.text, sp.start))
            else:
                spans.append(sp)
        rw = Rewritten(spans)
        items = self._words(text, rw, self._g2p_tokens(rw))
        items = _fill_gaps(text, clean, sent, items, marked.markup)
        sounding = [it for it in items if it.phonemes]
        if sounding:
            sounding[-1].sentence_end = sent.sentence_end
        if items:
            items[-1].paragraph_end = sent.paragraph_end
            items[-1].sentence_end = items[-1].sentence_end or sent.sentence_end
            items[-1].space_after = True  # the next sentence is a separate word
        return items

    def _g2p_tokens(self, rw: Rewritten) -> list[G2PToken]:
        if not rw.text.strip():
            return []
        if not rw.overrides() and not _WORDLIKE.search(rw.text):
            return _symbol_tokens(rw.text)  # only punctuation and symbols: no need to run a G2P
        try:
            return list(self.g2p(rw.text, rw.overrides()))
        except _G2P_ERRORS as e:
            # A third-party G2P tripped over this sentence: say so, then try word by word.
            log.warning(
                "%s G2P failed on %r (%s: %s); retrying word by word",
                self.info.name,
                rw.text[:80],
                type(e).__name__,
                e,
            )
        tokens: list[G2PToken] = []
        for m in regex.finditer(r"\S+", rw.text):
            try:
                got = self.g2p(m.group(0), [])
            except _G2P_ERRORS:
                log.warning("%s G2P cannot read %r; it will be silent", self.info.name, m.group(0)[:40])
                got = []
            for tk in got:
                tk.start, tk.end = m.start() + max(tk.start, 0), m.start() + max(tk.end, 0)
            tokens.extend(got)
        return tokens

    def _words(self, text: str, rw: Rewritten, tokens: list[G2PToken]) -> list[Item]:
        """Map tokens back to source words; tokens of one rewritten span become one word."""
        items: list[Item] = []
        for tk in tokens:
            if not tk.text.strip() and not tk.phonemes.strip():
                continue  # a whitespace token (spaCy makes them for newlines)
            ps = in_vocab(tk.phonemes)
            if self.normalize and any(ch.isalnum() for ch in tk.text):
                ps = "".join(ch for ch in ps if ch not in PUNCTUATION)  # no stray ':' inside a word
            if tk.end > tk.start:
                a, b = rw.source(tk.start, tk.end)
            else:
                a = b = rw.source(tk.start, tk.start + 1)[0] if rw.text else 0
            prev = items[-1] if items else None
            if prev is not None and a < prev.char_end and b > prev.char_start:
                if ps:
                    glue = " " if prev.phonemes and prev.space_after else ""
                    prev.phonemes = (prev.phonemes + glue + ps).strip()
                prev.char_end = max(prev.char_end, b)
                prev.text = text[prev.char_start : prev.char_end]
                prev.space_after = tk.space_after
                continue
            items.append(Item(text[a:b], ps.strip(), a, b, tk.space_after))
        return items

    # -- raw phoneme mode --------------------------------------------------------------------------

    def _raw_items(self, text: str, clean: str) -> Iterator[Item]:
        for sent in sentences(clean):
            items: list[Item] = []
            for m in _RAW_SPLIT.finditer(clean, sent.start, sent.end):
                ps = clean_user_phonemes(m.group(0), where="raw phonemes", strict=False)
                space = m.end() < len(clean) and clean[m.end()].isspace()
                items.append(Item(text[m.start() : m.end()], ps, m.start(), m.end(), space))
            items = _fill_gaps(text, clean, sent, items, [])
            if items:
                items[-1].sentence_end = sent.sentence_end
                items[-1].paragraph_end = sent.paragraph_end
                items[-1].space_after = True
            yield from items


def _symbol_tokens(text: str) -> list[G2PToken]:
    """Tokens for text without letters or digits: its punctuation marks, each kept if the model knows it."""
    out = []
    for m in regex.finditer(r"\S", text):
        c = m.group(0)
        mark = {"«": "“", "»": "”", "–": "—", "-": "—"}.get(c, c)
        ps = mark if mark in PUNCTUATION else ""
        out.append(G2PToken(c, ps, m.end() < len(text) and text[m.end()].isspace(), m.start(), m.end()))
    return out


def _fill_gaps(
    text: str, clean: str, sent: Sentence, items: list[Item], markup: list[tuple[int, int]]
) -> list[Item]:
    """Add silent words for any source text no word covers, so nothing of the input is lost."""
    covered = sorted([(it.char_start, it.char_end) for it in items] + markup)
    gaps: list[Item] = []
    pos = sent.start
    for a, b in [*covered, (sent.end, sent.end)]:
        if a > pos:
            for m in regex.finditer(r"\S+", clean[pos:a]):
                a0, b0 = pos + m.start(), pos + m.end()
                gaps.append(Item(text[a0:b0], "", a0, b0, True))
        pos = max(pos, b)
    if not gaps:
        return items
    return sorted(items + gaps, key=lambda it: (it.char_start, it.char_end))


_FRONTENDS: dict[tuple[str, bool], FrontEnd] = {}


def phonemize(text: str, lang: str = "a", **kw: Any) -> str:
    """Phonemes of ``text`` in ``lang`` (keywords: lexicon, normalize, raw_phonemes, max_phonemes)."""
    init = {k: kw.pop(k) for k in ("lexicon", "normalize") if k in kw}
    if "lexicon" in init:
        return FrontEnd(lang, **init).phonemize(text, **kw)
    key = (resolve_language(lang), bool(init.get("normalize", True)))
    if key not in _FRONTENDS:
        _FRONTENDS[key] = FrontEnd(key[0], normalize=key[1])
    return _FRONTENDS[key].phonemize(text, **kw)
