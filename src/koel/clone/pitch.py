"""Frame energy, voicing and F0 of recorded speech (YIN), on Kokoro's 12.5 ms F0 grid.

Used to describe a reference recording (is it speech? how high, how varied is the voice?) and to
measure voices for editing. Numpy only; about 20 ms per second of 24 kHz audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from koel.constants import F0_HOP, SAMPLE_RATE

F0_MIN = 55.0
F0_MAX = 500.0
YIN_THRESHOLD = 0.2
WINDOW = 1024
"""Samples per analysis window (43 ms at 24 kHz): two periods of the lowest F0."""


@dataclass(frozen=True)
class PitchTrack:
    """Per-frame analysis at ``hop`` samples: level (dBFS), F0 in Hz (0 = unvoiced), periodicity."""

    level_db: np.ndarray  # [N]
    f0: np.ndarray  # [N] Hz, 0 where unvoiced
    periodicity: np.ndarray  # [N] 1 - min YIN difference (1 = perfectly periodic)
    hop: int = F0_HOP
    sample_rate: int = SAMPLE_RATE

    @property
    def frame_seconds(self) -> float:
        return self.hop / self.sample_rate

    def active(self, floor_db: float = -50.0, below_peak_db: float = 40.0) -> np.ndarray:
        """Frames loud enough to be speech: above ``floor_db`` and within 40 dB of the loud frames."""
        if not len(self.level_db):
            return np.zeros(0, dtype=bool)
        loud = float(np.percentile(self.level_db, 95))
        return (self.level_db > floor_db) & (self.level_db > loud - below_peak_db)

    @property
    def voiced(self) -> np.ndarray:
        return self.f0 > 0


def _frames(audio: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Centred frames [N, length] (zero padded), N = len(audio) // hop + 1."""
    padded = np.pad(audio, (length // 2, length))
    n = len(audio) // hop + 1
    return np.lib.stride_tricks.sliding_window_view(padded, length)[: n * hop : hop][:n]


def track_pitch(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    hop: int = F0_HOP,
    f0_min: float = F0_MIN,
    f0_max: float = F0_MAX,
) -> PitchTrack:
    """YIN F0 (cumulative-mean-normalised difference, absolute threshold, parabolic refinement)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    tau_min = max(2, int(sample_rate / f0_max))
    tau_max = int(np.ceil(sample_rate / f0_min))
    window = max(WINDOW * sample_rate // SAMPLE_RATE, tau_max + 2)
    frames = _frames(x, window + tau_max, hop)  # [N, W + tau_max]
    level = 10 * np.log10(np.mean(frames[:, :window] ** 2, axis=1) + 1e-12)
    # d(tau) = E(x_0) + E(x_tau) - 2 r(tau), with the cross-correlation through the FFT.
    size = 1 << int(np.ceil(np.log2(window + tau_max + window)))
    head = np.fft.rfft(frames[:, :window], size)
    full = np.fft.rfft(frames, size)
    r = np.fft.irfft(np.conj(head) * full, size)[:, : tau_max + 1]
    energy = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    e0 = energy[:, window]
    e_tau = energy[:, window : window + tau_max + 1] - energy[:, : tau_max + 1]
    diff = np.maximum(e0[:, None] + e_tau - 2 * r, 0.0)
    taus = np.arange(tau_max + 1)
    cumulative = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(cumulative, 1e-12)
    search = cmnd[:, tau_min : tau_max + 1]
    below = search < YIN_THRESHOLD
    # First dip under the threshold, then walk to its local minimum.
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    best = first.copy()
    for _ in range(tau_max):
        nxt = np.minimum(best + 1, search.shape[1] - 1)
        move = search[np.arange(len(best)), nxt] < search[np.arange(len(best)), best]
        if not move.any():
            break
        best = np.where(move, nxt, best)
    rows = np.arange(len(best))
    value = search[rows, best]
    left = search[rows, np.maximum(best - 1, 0)]
    right = search[rows, np.minimum(best + 1, search.shape[1] - 1)]
    denom = left - 2 * value + right
    shift = np.where(np.abs(denom) > 1e-9, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    tau = best + tau_min + np.clip(shift, -1, 1)
    periodicity = 1.0 - np.clip(value, 0.0, 1.0)
    voiced = (value < YIN_THRESHOLD) & (level > -60.0)
    f0 = np.where(voiced, sample_rate / tau, 0.0)
    return PitchTrack(
        level.astype(np.float32), f0.astype(np.float32), periodicity.astype(np.float32), hop, sample_rate
    )


@dataclass(frozen=True)
class PitchStats:
    """Summary of a voice's pitch: mean and spread of log2 F0 over voiced frames."""

    log2_mean: float
    log2_std: float
    voiced_frames: int

    @property
    def median_hz(self) -> float:
        return float(2**self.log2_mean)


OCTAVE_WINDOW = 0.5
"""Voiced values further than this (in octaves) from the median are tracking errors, not intonation."""


def pitch_stats(f0: np.ndarray) -> PitchStats:
    """Robust log-F0 statistics: values over half an octave from the median are ignored."""
    voiced = np.asarray(f0, dtype=np.float64)
    voiced = voiced[voiced > 0]
    if len(voiced) == 0:
        return PitchStats(float("nan"), float("nan"), 0)
    logs = np.log2(voiced)
    median = float(np.median(logs))
    kept = logs[np.abs(logs - median) < OCTAVE_WINDOW]
    return PitchStats(float(kept.mean()), float(kept.std()), len(kept))
