"""Waveform discriminators of StyleTTS2's stage 1/2: multi-period (HiFi-GAN) and multi-resolution.

Each sub-discriminator returns its logits and the feature maps used for feature matching.
``width`` scales every channel count (1.0 = the published sizes; the tiny test config uses less).

Shapes: B batch, S samples; feature maps are 4-D [B, C, frames, period or bins].
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Features = list[torch.Tensor]


def _ch(n: int, width: float) -> int:
    return max(4, round(n * width))


class PeriodDiscriminator(nn.Module):
    """Reshape the waveform to [S / p, p] and run 2-D convs along time (HiFi-GAN DiscriminatorP)."""

    def __init__(self, period: int, width: float = 1.0) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [_ch(c, width) for c in (32, 128, 512, 1024)]
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0)))
                for a, b in itertools.pairwise(chans)
            ]
        )
        self.convs.append(weight_norm(nn.Conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, Features]:
        """audio [B, S] -> logits [B, N], features."""
        x = audio[:, None, :]
        rest = (-x.shape[-1]) % self.period
        if rest:
            x = F.pad(x, (0, rest), mode="reflect")
        x = x.reshape(x.shape[0], 1, -1, self.period)
        return _conv_stack(self.convs, self.post, x)


def _conv_stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Features]:
    """Leaky-ReLU conv layers then the output conv: logits [B, N] and every layer's output."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class ResolutionDiscriminator(nn.Module):
    """2-D convs over a linear magnitude spectrogram at one STFT resolution (StyleTTS2's MRD)."""

    def __init__(self, n_fft: int, hop: int, win: int, width: float = 1.0) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.window: torch.Tensor
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        c = _ch(32, width)
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, c, (3, 9), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
            ]
        )
        self.post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, Features]:
        spec = torch.stft(
            audio.float(), self.n_fft, self.hop, self.win, self.window, center=True, return_complex=True
        ).abs()  # [B, bins, frames]
        x = spec.transpose(1, 2)[:, None].to(audio.dtype)  # [B, 1, frames, bins]
        return _conv_stack(self.convs, self.post, x)


class Discriminators(nn.Module):
    """MPD (periods 2, 3, 5, 7, 11) + MRD (three STFT resolutions) as one module."""

    RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), width: float = 1.0) -> None:
        super().__init__()
        self.mpd = nn.ModuleList([PeriodDiscriminator(p, width) for p in periods])
        self.mrd = nn.ModuleList([ResolutionDiscriminator(n, h, w, width) for n, h, w in self.RESOLUTIONS])

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[Features]]:
        """audio [B, S] -> one logits tensor and one feature list per sub-discriminator."""
        logits, features = [], []
        for d in [*self.mpd, *self.mrd]:
            out, feats = d(audio)
            logits.append(out)
            features.append(feats)
        return logits, features
