"""Signal helpers shared by parity checks, benchmarks, training and voice creation (log-mel)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None):
    """HTK-scale triangular filters [n_mels, n_fft // 2 + 1] (no area normalisation)."""
    f_max = f_max if f_max is not None else sample_rate / 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(
        _hz_to_mel(torch.tensor(f_min)).item(), _hz_to_mel(torch.tensor(f_max)).item(), n_mels + 2
    )
    edges = _mel_to_hz(mels.double())
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def mel_spectrogram(
    audio: torch.Tensor,
    sample_rate: int = 24_000,
    n_fft: int = 2048,
    hop: int = 300,
    win: int = 1200,
    n_mels: int = 80,
    center: bool = True,
) -> torch.Tensor:
    """Power mel spectrogram [..., n_mels, frames] of audio [..., samples] (Hann window)."""
    shape = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1])
    spec = torch.stft(
        flat,
        n_fft,
        hop,
        win,
        torch.hann_window(win, device=audio.device, dtype=audio.dtype),
        center=center,
        return_complex=True,
    )
    power = spec.abs() ** 2
    mel = mel_filterbank(sample_rate, n_fft, n_mels).to(audio.device, audio.dtype) @ power
    return mel.reshape(*shape, n_mels, mel.shape[-1])


def log_mel(audio: torch.Tensor, sample_rate: int = 24_000, eps: float = 1e-5, **kwargs) -> torch.Tensor:
    """Natural-log mel magnitude: log(eps + mel), StyleTTS2-style (magnitude, not power)."""
    return torch.log(eps + torch.sqrt(mel_spectrogram(audio, sample_rate, **kwargs)))


def db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-12))
