"""Small dataclasses that the stages hand each other (text -> phonemes -> audio)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Word:
    """One source word and the phonemes it became inside a chunk.

    ``ph_start:ph_end`` index the chunk's phoneme string. ``char_start:char_end`` index the
    original input text (before normalisation), so a word like "9:30" keeps its source span even
    though it is spoken as "nine thirty". Punctuation tokens are words with their own phonemes.
    """

    text: str
    phonemes: str
    ph_start: int
    ph_end: int
    char_start: int
    char_end: int


@dataclass(frozen=True)
class PhonemeChunk:
    """A piece of text small enough for one model call (at most MAX_PHONEMES phonemes)."""

    text: str
    phonemes: str
    words: tuple[Word, ...] = ()
    lang: str = "a"
    sentence_end: bool = True
    paragraph_end: bool = False
    index: int = 0


@dataclass(frozen=True)
class WordTimestamp:
    """Start and end (seconds, from the start of the whole utterance) of one spoken word."""

    word: str
    start: float
    end: float
    char_start: int = -1
    char_end: int = -1


@dataclass
class AudioChunk:
    """Audio for one PhonemeChunk, as yielded by the pipeline.

    ``audio`` is float32 mono at SAMPLE_RATE and includes the pause that follows the chunk.
    ``offset`` is the chunk's start time (seconds) in the whole utterance.
    """

    audio: np.ndarray
    text: str
    phonemes: str
    durations: np.ndarray
    words: list[WordTimestamp] = field(default_factory=list)
    offset: float = 0.0
    index: int = 0
    voice: str = ""
