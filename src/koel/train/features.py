"""Training targets from audio: 24 kHz resampling, StyleTTS2 mel, energy and Praat F0.

Every target lives on Kokoro's grids: F duration frames of 600 samples (25 ms) and 2F F0/energy
steps of 300 samples (12.5 ms). Audio is zero-padded at the end to a whole number of frames.

Mel settings are StyleTTS2's (n_fft 2048, win 1200, hop 300, 80 bins, power 2, log(1e-5 + x),
then (x + 4) / 4), including its filterbank built for 16 kHz although the audio is 24 kHz: the
official energy predictor learned that scale, so fine-tuning keeps it (fact sheet section 10.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from koel.constants import F0_HOP, FRAME_SAMPLES, SAMPLE_RATE

MEL_N_FFT = 2048
MEL_WIN = 1200
MEL_BINS = 80
MEL_FBANK_RATE = 16_000
"""StyleTTS2 leaves torchaudio's default sample_rate (16 kHz) in its MelSpectrogram."""
LOG_MEL_MEAN, LOG_MEL_STD = -4.0, 4.0


class AudioFileError(ValueError):
    """An audio file that cannot be read or used for training."""


@dataclass
class UtteranceFeatures:
    """Targets for one utterance: audio [600F], log-mel [80, 2F], F0 (Hz, 0 unvoiced) and energy [2F]."""

    audio: torch.Tensor
    mel: torch.Tensor
    f0: torch.Tensor
    energy: torch.Tensor

    @property
    def frames(self) -> int:
        return self.audio.shape[-1] // FRAME_SAMPLES


def load_audio(path: str, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any soundfile-supported file as float32 mono at ``target_rate`` (polyphase resampling)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, sf.LibsndfileError) as exc:
        raise AudioFileError(f"cannot read audio {path}: {exc}") from exc
    audio = data.mean(axis=1)
    if rate != target_rate:
        g = math.gcd(int(rate), target_rate)
        audio = resample_poly(audio, target_rate // g, int(rate) // g).astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def pad_to_frames(audio: np.ndarray) -> np.ndarray:
    """Zero-pad at the end to a whole number of 600-sample frames."""
    rest = (-len(audio)) % FRAME_SAMPLES
    return np.pad(audio, (0, rest)) if rest else audio


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular HTK-mel filters without area normalisation, [n_fft // 2 + 1, n_mels] (torchaudio's default)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    points = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(points)
    slopes = points[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return torch.from_numpy(np.maximum(0.0, np.minimum(down, up))).float()


def mel_power(audio: torch.Tensor, n_fft: int, hop: int, win: int, fbank: torch.Tensor) -> torch.Tensor:
    """audio [..., S] -> mel power [..., n_mels, S // hop + 1] (centred, reflect-padded, Hann)."""
    window = torch.hann_window(win, device=audio.device, dtype=audio.dtype)
    shape = audio.shape[:-1]
    spec = torch.stft(
        audio.reshape(-1, audio.shape[-1]),
        n_fft,
        hop,
        win,
        window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real**2 + spec.imag**2
    mel = torch.einsum("bfn,fm->bmn", power, fbank.to(audio))
    return mel.reshape(*shape, *mel.shape[-2:])


def styletts2_mel(audio: torch.Tensor) -> torch.Tensor:
    """audio [..., 600F] -> normalised log-mel [..., 80, 2F] (StyleTTS2 settings, last frame dropped)."""
    fbank = mel_filterbank(MEL_N_FFT, MEL_BINS, MEL_FBANK_RATE)
    mel = mel_power(audio, MEL_N_FFT, F0_HOP, MEL_WIN, fbank)
    steps = 2 * (audio.shape[-1] // FRAME_SAMPLES)
    return ((torch.log(1e-5 + mel) - LOG_MEL_MEAN) / LOG_MEL_STD)[..., :steps]


def energy_from_mel(mel: torch.Tensor) -> torch.Tensor:
    """StyleTTS2's energy target: log of the L2 norm over bins of the linear mel, [..., 80, L] -> [..., L]."""
    return torch.log(torch.exp(mel * LOG_MEL_STD + LOG_MEL_MEAN).norm(dim=-2))


def pitch(
    audio: np.ndarray, method: str = "ac", f0_floor: float = 50.0, f0_ceil: float = 600.0
) -> np.ndarray:
    """F0 in Hz every 12.5 ms (0 where unvoiced), ``len(audio) // 300`` values, via Praat (parselmouth).

    Step j is sampled at 300 j samples, the centre of mel frame j, from the nearest Praat frame
    (nearest, not linear, so voiced/unvoiced edges stay sharp).
    """
    import parselmouth

    sound = parselmouth.Sound(audio.astype(np.float64), float(SAMPLE_RATE))
    step = F0_HOP / SAMPLE_RATE
    if method == "ac":
        track = sound.to_pitch_ac(time_step=step, pitch_floor=f0_floor, pitch_ceiling=f0_ceil)
    elif method == "cc":
        track = sound.to_pitch_cc(time_step=step, pitch_floor=f0_floor, pitch_ceiling=f0_ceil)
    else:
        raise ValueError(
            f"unknown pitch method {method!r}: use 'ac' or 'cc' (Praat autocorrelation / cross-correlation)"
        )
    times = np.asarray(track.xs())
    values = np.nan_to_num(np.asarray(track.selected_array["frequency"], dtype=np.float64))
    steps = len(audio) // F0_HOP
    if len(times) == 0:
        return np.zeros(steps, dtype=np.float32)
    grid = np.arange(steps) * step
    index = np.clip(np.rint((grid - times[0]) / step).astype(np.int64), 0, len(times) - 1)
    out = values[index]
    outside = (grid < times[0] - step) | (grid > times[-1] + step)
    out[outside] = 0.0
    return out.astype(np.float32)


def extract_features(
    audio: np.ndarray, method: str = "ac", f0_floor: float = 50.0, f0_ceil: float = 600.0
) -> UtteranceFeatures:
    """24 kHz float audio -> all targets on Kokoro's grids."""
    audio = pad_to_frames(audio)
    wave = torch.from_numpy(audio)
    mel = styletts2_mel(wave)
    return UtteranceFeatures(
        audio=wave,
        mel=mel,
        f0=torch.from_numpy(pitch(audio, method, f0_floor, f0_ceil)),
        energy=energy_from_mel(mel),
    )


def rms_dbfs(audio: np.ndarray) -> float:
    return float(20.0 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12))
