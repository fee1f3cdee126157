"""Reference recordings: read any format, mix to mono, resample to 24 kHz and check it is speech.

Every problem that would make a useless voice is an error (:class:`ReferenceAudioError`) raised
before any optimisation starts; problems that only lower quality are warnings kept on the clip.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from koel.clone.errors import ReferenceAudioError
from koel.clone.pitch import PitchTrack, track_pitch
from koel.constants import SAMPLE_RATE

log = logging.getLogger(__name__)

MIN_SPEECH_SECONDS = 3.0
"""Less active speech than this in all references together is refused."""
RECOMMENDED_SPEECH_SECONDS = 10.0
MAX_SECONDS_PER_CLIP = 600.0
MIN_SAMPLE_RATE = 8_000
NARROWBAND_RATE = 16_000
SILENCE_DBFS = -55.0
MIN_VOICED_FRACTION = 0.12
"""Speech is voiced for roughly 30-60 % of its active frames; noise almost never is."""
MAX_VOICED_FRACTION = 0.97
MIN_F0_SPREAD = 0.015
"""Spread (std of log2 F0) below which a voiced signal is a held tone, not speech intonation."""
MAX_PAUSE_SECONDS = 0.3


@dataclass
class ReferenceClip:
    """One reference recording at 24 kHz mono, with its analysis and the warnings it raised."""

    name: str
    audio: np.ndarray  # [S] float32, 24 kHz
    track: PitchTrack
    transcript: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def speech_seconds(self) -> float:
        return float(self.track.active().sum()) * self.track.frame_seconds

    def speech_audio(self, max_pause: float = MAX_PAUSE_SECONDS) -> np.ndarray:
        """The audio with leading/trailing silence removed and inner pauses shortened to ``max_pause``."""
        active = self.track.active()
        hop = self.track.hop
        keep = np.zeros(len(active), dtype=bool)
        limit = max(1, round(max_pause / self.track.frame_seconds))
        run = limit  # drop leading silence entirely
        for i, a in enumerate(active):
            run = 0 if a else run + 1
            keep[i] = a or run <= limit
        if not keep.any():
            return self.audio[:0]
        last = len(keep) - 1 - int(np.argmax(keep[::-1] & active[::-1]))
        keep[last + 1 :] = False
        mask = np.repeat(keep, hop)[: len(self.audio)]
        mask = np.pad(mask, (0, len(self.audio) - len(mask)))
        return self.audio[mask]


def _mono(samples: np.ndarray, name: str, warnings: list[str]) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2 and samples.shape[1] >= 1:
        if samples.shape[1] > 1:
            warnings.append(f"{name}: {samples.shape[1]} channels mixed down to mono")
        return samples.mean(axis=1)
    raise ReferenceAudioError(
        f"{name}: audio has shape {samples.shape}; expected (samples,) or (samples, channels)"
    )


def prepare_reference(
    samples: np.ndarray, sample_rate: int, name: str = "reference", transcript: str | None = None
) -> ReferenceClip:
    """Check and convert in-memory audio (any rate, mono or (S, channels)) into a ReferenceClip."""
    warnings: list[str] = []
    x = np.asarray(samples)
    if x.size == 0:
        raise ReferenceAudioError(f"{name}: the recording is empty")
    if not np.issubdtype(x.dtype, np.floating):
        if np.issubdtype(x.dtype, np.integer):
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
        else:
            raise ReferenceAudioError(f"{name}: samples of type {x.dtype} are not audio")
    x = _mono(x.astype(np.float32), name, warnings)
    if not np.isfinite(x).all():
        raise ReferenceAudioError(f"{name}: the audio contains NaN or infinite samples (corrupt file?)")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ReferenceAudioError(
            f"{name}: sample rate {sample_rate} Hz is too low (at least {MIN_SAMPLE_RATE} Hz, ideally 22-48 kHz); "
            "if the file header is wrong, re-save it with the correct rate"
        )
    if sample_rate < NARROWBAND_RATE:
        warnings.append(f"{name}: {sample_rate} Hz is narrowband audio; the voice may sound muffled")
    if len(x) / sample_rate > MAX_SECONDS_PER_CLIP:
        warnings.append(f"{name}: only the first {MAX_SECONDS_PER_CLIP:.0f} s are used")
        x = x[: int(MAX_SECONDS_PER_CLIP * sample_rate)]
    peak = float(np.abs(x).max())
    if peak > 1.5:
        raise ReferenceAudioError(
            f"{name}: samples reach {peak:.1f}; expected floats in [-1, 1] (wrong scaling?)"
        )
    if float(np.mean(np.abs(x) >= 0.999)) > 1e-3:
        warnings.append(f"{name}: the recording is clipped; distortion may be copied into the voice")
    if sample_rate != SAMPLE_RATE:
        from koel.audio import resample

        x = resample(x, sample_rate, SAMPLE_RATE)
    x = np.ascontiguousarray(x, dtype=np.float32)
    clip = ReferenceClip(name=name, audio=x, track=track_pitch(x), transcript=transcript, warnings=warnings)
    _check_speech(clip)
    for w in clip.warnings:
        log.warning("%s", w)
    return clip


def _check_speech(clip: ReferenceClip) -> None:
    name, track = clip.name, clip.track
    rms_db = 10 * np.log10(float(np.mean(clip.audio.astype(np.float64) ** 2)) + 1e-12)
    if rms_db < SILENCE_DBFS or not (track.level_db > SILENCE_DBFS + 10).any():
        raise ReferenceAudioError(
            f"{name}: the recording is silent (RMS {rms_db:.0f} dBFS); give a recording of speech"
        )
    active = track.active()
    voiced_fraction = float((track.voiced & active).sum()) / max(1, int(active.sum()))
    if voiced_fraction < MIN_VOICED_FRACTION:
        raise ReferenceAudioError(
            f"{name}: this does not sound like speech (only {voiced_fraction:.0%} of the active frames are voiced; "
            "noise or non-vocal sound?); give a clean recording of one person speaking"
        )
    f0 = track.f0[track.voiced & active]
    spread = float(np.std(np.log2(f0))) if len(f0) else 0.0
    if voiced_fraction > MAX_VOICED_FRACTION or spread < MIN_F0_SPREAD:
        raise ReferenceAudioError(
            f"{name}: this sounds like a held tone or music, not speech (voiced {voiced_fraction:.0%} of the time, "
            f"pitch spread {spread * 12:.2f} semitones); give a recording of one person speaking"
        )
    if clip.speech_seconds < 1.0:
        raise ReferenceAudioError(
            f"{name}: only {clip.speech_seconds:.1f} s of speech; give at least a few seconds"
        )


def load_reference(path: str | os.PathLike[str], transcript: str | None = None) -> ReferenceClip:
    """Read a recording (wav, flac, mp3, ogg, m4a, ...) and check it (see :func:`prepare_reference`)."""
    from koel.audio import AudioFormatError, decode

    path = Path(path)
    if not path.is_file():
        raise ReferenceAudioError(f"reference recording {path} does not exist")
    try:
        samples, rate = decode(path)
    except (AudioFormatError, OSError, RuntimeError) as exc:
        raise ReferenceAudioError(f"cannot read {path}: {exc}") from exc
    return prepare_reference(samples, rate, name=path.name, transcript=transcript)


def check_total_speech(clips: list[ReferenceClip]) -> list[str]:
    """Refuse too little speech overall; below the recommended amount, return a warning (not logged)."""
    total = sum(c.speech_seconds for c in clips)
    if total < MIN_SPEECH_SECONDS:
        raise ReferenceAudioError(
            f"only {total:.1f} s of speech in the reference recordings; voice creation needs at least "
            f"{MIN_SPEECH_SECONDS:.0f} s ({RECOMMENDED_SPEECH_SECONDS:.0f} s to a few minutes recommended)"
        )
    if total < RECOMMENDED_SPEECH_SECONDS:
        return [
            f"only {total:.1f} s of speech: the voice will be approximate "
            f"({RECOMMENDED_SPEECH_SECONDS:.0f} s or more recommended)"
        ]
    return []
