"""What a created voice is fitted to: the speaker's identity, spectrum, pitch and speaking rate.

All targets are statistics pooled over the reference speech, so the synthetic side may speak any
text (the transcript when there is one) without a frame alignment:

* speaker: 1 - cosine between Resemblyzer embeddings (identity as a trained verifier hears it);
* spectrum: L1 between long-term average log-mel spectra, level removed (timbre, brightness);
* pitch: mean and spread of log F0 in semitones, from the model's own F0 curve (the generator is
  driven by exactly this curve, so no pitch tracker is needed on the synthetic side);
* rate: log ratio of phonemes per second (needs the transcript's phoneme count);
* offset: mean squared distance from the blend space, in units of the voices' spread.

Log-mel settings are StyleTTS2's (fact sheet 10.2): 80 HTK bands, n_fft 2048, window 1200,
hop 300, with torchaudio's default 16 kHz labelling of the bins, log(1e-5 + mel), (x + 4) / 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from koel.clone.audio_input import ReferenceClip
from koel.clone.pitch import OCTAVE_WINDOW, pitch_stats
from koel.clone.speaker import SpeakerEncoder
from koel.constants import FRAME_SAMPLES, SAMPLE_RATE

N_MELS = 80
N_FFT = 2048
WIN_LENGTH = 1200
HOP_LENGTH = 300
ACTIVE_RANGE = 9.2 / 4
"""Frames within 40 dB (ln 10^4, scaled by the /4 normalisation) of the loudest count as speech."""
VOICED_F0 = 50.0
LEVEL_DB = -23.0
ENERGY_RANGE = 4.0
"""Steps whose predicted log energy is this far below the utterance peak are treated as unvoiced."""


def htk_mel_filterbank(n_freqs: int, n_mels: int, label_rate: int) -> torch.Tensor:
    """Triangular HTK-mel filters [n_freqs, n_mels] over bins labelled 0..label_rate/2 (no norm)."""
    freqs = torch.linspace(0, label_rate // 2, n_freqs, dtype=torch.float64)
    top = 2595.0 * math.log10(1.0 + (label_rate / 2) / 700.0)
    m_pts = torch.linspace(0.0, top, n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).float()


class LogMel(nn.Module):
    """Audio [B, S] at 24 kHz -> normalised log-mel [B, 80, M] (StyleTTS2's training features).

    With ``level_db`` the audio is first scaled to that RMS level, so that the 1e-5 floor of the
    log cuts quiet bands the same way for recordings made at any gain.
    """

    fb: torch.Tensor
    window: torch.Tensor

    def __init__(self, level_db: float | None = LEVEL_DB) -> None:
        super().__init__()
        self.level = None if level_db is None else 10 ** (level_db / 20)
        self.register_buffer("fb", htk_mel_filterbank(N_FFT // 2 + 1, N_MELS, 16_000), persistent=False)
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=True), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if self.level is not None:
            audio = audio * (self.level / audio.pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-12).sqrt())
        spec = torch.stft(
            audio,
            N_FFT,
            HOP_LENGTH,
            WIN_LENGTH,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.pow(2) + spec.imag.pow(2)
        mel = (self.fb.T @ power).clamp_min(0)
        return (torch.log(1e-5 + mel) + 4) / 4


def spectral_shape(logmel: torch.Tensor) -> torch.Tensor:
    """Long-term average spectrum [80] over the active frames of [80, M], its mean level removed."""
    loudness = logmel.mean(dim=0).detach()
    active = (loudness > loudness.max() - ACTIVE_RANGE).float()
    ltas = (logmel * active).sum(dim=1) / active.sum().clamp_min(1.0)
    return ltas - ltas.mean()


@dataclass(frozen=True)
class LossWeights:
    """Relative weights of the terms (see the module docstring); 0 switches a term off."""

    speaker: float = 1.0
    spectrum: float = 0.5
    pitch: float = 0.1
    rate: float = 5.0
    offset: float = 0.05


@dataclass(frozen=True)
class ReferenceTargets:
    """Pooled statistics of the reference speech that the voice is fitted to."""

    embedding: torch.Tensor  # [256] unit norm
    spectrum: torch.Tensor  # [80]
    log2_f0_mean: float
    log2_f0_std: float
    phonemes_per_second: float | None

    def summary(self) -> str:
        rate = f", {self.phonemes_per_second:.1f} phonemes/s" if self.phonemes_per_second else ""
        return f"median F0 {2**self.log2_f0_mean:.0f} Hz, spread {12 * self.log2_f0_std:.1f} semitones{rate}"


def speech_span_seconds(clip: ReferenceClip) -> float:
    """Seconds from the first to the last active frame (pauses inside count, as in synthesis)."""
    active = np.flatnonzero(clip.track.active())
    return 0.0 if len(active) == 0 else (active[-1] - active[0] + 1) * clip.track.frame_seconds


def reference_targets(
    clips: list[ReferenceClip], encoder: SpeakerEncoder, logmel: LogMel, phoneme_count: int | None = None
) -> ReferenceTargets:
    """Targets from the clips; ``phoneme_count`` (of their transcripts) gives the speaking rate."""
    speech = [c.speech_audio() for c in clips]
    embedding = encoder.embed_speaker(speech)
    with torch.no_grad():
        shapes = [spectral_shape(logmel(torch.from_numpy(s)[None])[0]) for s in speech if len(s) > WIN_LENGTH]
        spectrum = torch.stack(shapes).mean(dim=0)
    f0 = np.concatenate([c.track.f0[c.track.active() & c.track.voiced] for c in clips])
    stats = pitch_stats(f0)
    rate = None
    if phoneme_count:
        span = sum(speech_span_seconds(c) for c in clips)
        rate = phoneme_count / span if span > 0 else None
    return ReferenceTargets(embedding, spectrum, stats.log2_mean, stats.log2_std, rate)


def log2_f0_stats(f0: torch.Tensor, energy: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of log2 F0 [.., N] over voiced steps (differentiable in the voiced values).

    The model predicts an F0 value everywhere; steps count as voiced when F0 is above 50 Hz, the
    predicted energy is within ``ENERGY_RANGE`` of its peak, and F0 is within half an octave of
    the median, the same robust window :func:`koel.clone.pitch.pitch_stats` applies to recordings.
    """
    voiced = f0.detach() > VOICED_F0
    if energy is not None:
        voiced &= energy.detach() > energy.detach().max() - ENERGY_RANGE
    if int(voiced.sum()) < 2:
        zero = f0.sum() * 0
        return zero, zero
    logs = torch.log2(f0[voiced])
    kept = (logs.detach() - logs.detach().median()).abs() < OCTAVE_WINDOW
    logs = logs[kept] if int(kept.sum()) >= 2 else logs
    return logs.mean(), logs.std()


class CloneObjective(nn.Module):
    """Weighted sum of the terms for one synthetic crop; returns the total and each term."""

    def __init__(
        self, targets: ReferenceTargets, encoder: SpeakerEncoder, logmel: LogMel, weights: LossWeights
    ):
        super().__init__()
        self.targets = targets
        self.encoder = encoder
        self.logmel = logmel
        self.weights = weights

    def forward(
        self,
        audio: torch.Tensor,
        f0: torch.Tensor,
        energy: torch.Tensor,
        soft_frames: torch.Tensor,
        n_phonemes: int,
        offset_penalty: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """audio [1, S] crop, f0 and energy [1, 2F], soft_frames [] (25 ms frames of the phonemes)."""
        w, t = self.weights, self.targets
        terms: dict[str, torch.Tensor] = {}
        if w.speaker:
            emb = self.encoder(audio)[0]
            terms["speaker"] = 1.0 - torch.dot(emb, t.embedding)
        if w.spectrum:
            terms["spectrum"] = (spectral_shape(self.logmel(audio)[0]) - t.spectrum).abs().mean()
        if w.pitch and math.isfinite(t.log2_f0_mean):
            mean, std = log2_f0_stats(f0, energy)
            # semitones; a 2-semitone error in the mean costs as much as 1 semitone of spread
            terms["pitch"] = (6 * (mean - t.log2_f0_mean)) ** 2 + (12 * (std - t.log2_f0_std)) ** 2
        if w.rate and t.phonemes_per_second:
            seconds = soft_frames * (FRAME_SAMPLES / SAMPLE_RATE)
            terms["rate"] = torch.log(n_phonemes / seconds.clamp_min(1e-3) / t.phonemes_per_second) ** 2
        if w.offset:
            terms["offset"] = offset_penalty
        total = sum(getattr(w, k) * v for k, v in terms.items())
        assert isinstance(total, torch.Tensor)
        return total, {k: float(v.detach()) for k, v in terms.items()}
