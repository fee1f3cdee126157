"""A differentiable speaker encoder: Resemblyzer's pretrained LSTM with a torch mel front end.

Resemblyzer (PyPI ``resemblyzer``) ships a GE2E speaker encoder trained on 16 kHz audio: 40-band
Slaney mel power spectra (25 ms windows, 10 ms hop) -> 3-layer LSTM -> 256-d L2-normalised
embedding. Only its weight file is used here; the package's own audio code imports librosa and
webrtcvad, which voice creation does not need. Koel audio is 24 kHz: a 600-point STFT at 24 kHz
has the same 40 Hz bin spacing as Resemblyzer's 400-point STFT at 16 kHz, so the same filterbank
applies without resampling (the power is 2.25x larger, which is divided out).

Shapes: B batch, S samples at 24 kHz, M mel frames (100 per second), E = 256 embedding.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from koel.clone.errors import MissingDependencyError
from koel.constants import SAMPLE_RATE

log = logging.getLogger(__name__)

ENCODER_RATE = 16_000
"""Sample rate Resemblyzer was trained at; the filterbank stops at its Nyquist frequency."""
N_MELS = 40
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
PARTIAL_FRAMES = 160
"""Frames (1.6 s) per partial utterance, as in Resemblyzer's embed_utterance."""
TARGET_DBFS = -30.0
"""Resemblyzer raises quieter audio to this RMS level before embedding."""


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Area-normalised triangular filters on the Slaney mel scale, [n_mels, n_fft // 2 + 1].

    The same definition as librosa's default (``htk=False, norm='slaney'``).
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return np.where(
            f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp
        )

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def resemblyzer_weights_path() -> Path:
    """Where the installed ``resemblyzer`` package keeps ``pretrained.pt`` (without importing it)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "voice creation needs the pretrained speaker encoder of the 'resemblyzer' package: pip install resemblyzer"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise MissingDependencyError(f"the resemblyzer package has no pretrained.pt at {path}; reinstall it")
    return path


class SpeakerEncoder(nn.Module):
    """24 kHz audio -> Resemblyzer speaker embedding, differentiable with respect to the audio."""

    filterbank: torch.Tensor
    window: torch.Tensor

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = round(WINDOW_SECONDS * sample_rate)
        self.hop = round(HOP_SECONDS * sample_rate)
        fb = slaney_mel_filterbank(sample_rate, self.n_fft, N_MELS, 0.0, ENCODER_RATE / 2)
        self.register_buffer("filterbank", torch.from_numpy(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        # The same spectrum at another rate with the same window duration scales |X|^2 by the
        # squared ratio of window lengths; divide it out to match the 16 kHz training features.
        self.power_scale = (ENCODER_RATE / sample_rate) ** 2
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    @classmethod
    def pretrained(cls, sample_rate: int = SAMPLE_RATE) -> SpeakerEncoder:
        return _pretrained(sample_rate)

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, S] -> mel power [B, M, 40] (librosa ``melspectrogram`` conventions)."""
        spec = torch.stft(
            audio,
            self.n_fft,
            self.hop,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.pow(2) + spec.imag.pow(2)
        return (self.filterbank @ power).transpose(1, 2) * self.power_scale

    @staticmethod
    def normalize_volume(audio: torch.Tensor) -> torch.Tensor:
        """Raise quiet audio [B, S] to -30 dBFS RMS (never lower it), as Resemblyzer does."""
        rms = audio.pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-12).sqrt()
        gain = (10 ** (TARGET_DBFS / 20) / rms).clamp_min(1.0)
        return audio * gain

    def embed_frames(self, mels: torch.Tensor) -> torch.Tensor:
        """mel [B, M, 40] -> L2-normalised embeddings [B, 256] (final hidden state of the LSTM)."""
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, S] (each a partial of about 1.6 s) -> embeddings [B, 256]."""
        return self.embed_frames(self.mel(self.normalize_volume(audio)))

    @torch.no_grad()
    def embed_utterance(self, audio: torch.Tensor | np.ndarray, rate: float = 1.3) -> torch.Tensor:
        """One utterance [S] -> its embedding [256]: the normalised mean over 1.6 s partials."""
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1).to(self.filterbank.device)
        mels = self.mel(self.normalize_volume(x))[0]
        step = max(1, round(100 / rate))
        n = mels.shape[0]
        starts = list(range(0, max(1, n - PARTIAL_FRAMES + step), step))
        if len(starts) > 1 and n - starts[-1] < 0.75 * PARTIAL_FRAMES:
            starts = starts[:-1]  # Resemblyzer drops a last partial that covers under 75 %
        pad = max(0, starts[-1] + PARTIAL_FRAMES - n)
        mels = torch.nn.functional.pad(mels, (0, 0, 0, pad))
        partials = torch.stack([mels[s : s + PARTIAL_FRAMES] for s in starts])
        mean = self.embed_frames(partials).mean(dim=0)
        return mean / mean.norm().clamp_min(1e-8)

    def embed_speaker(self, utterances: list[np.ndarray]) -> torch.Tensor:
        """Several utterances of one speaker [S_i] -> one normalised embedding [256]."""
        mean = torch.stack([self.embed_utterance(u) for u in utterances]).mean(dim=0)
        return mean / mean.norm().clamp_min(1e-8)


@lru_cache(maxsize=2)
def _pretrained(sample_rate: int) -> SpeakerEncoder:
    path = resemblyzer_weights_path()
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    encoder = SpeakerEncoder(sample_rate)
    state = {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MissingDependencyError(f"{path} does not hold the expected speaker encoder (missing {missing})")
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    log.debug("loaded the Resemblyzer speaker encoder from %s", path)
    return encoder
