"""StyleTTS2's training losses, written per utterance and then averaged over the batch.

Averaging per-utterance losses (rather than pooling a batch) makes a step's loss and gradient
independent of how the global batch is split across processes, which is what lets DDP reproduce
a single-process run exactly.

Shapes: B batch, T tokens, S samples, L F0/energy steps, K = max_dur duration bins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from koel.constants import SAMPLE_RATE
from koel.train.features import mel_filterbank, mel_power

MEL_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


class MultiResolutionMelLoss(nn.Module):
    """Spectral convergence ||log y - log x||_1 / ||log y||_1 of 128-bin mels at three resolutions."""

    def __init__(
        self, resolutions: tuple[tuple[int, int, int], ...] = MEL_RESOLUTIONS, n_mels: int = 128
    ) -> None:
        super().__init__()
        self.resolutions = resolutions
        for i, (n_fft, _, _) in enumerate(resolutions):
            self.register_buffer(f"fbank{i}", mel_filterbank(n_fft, n_mels, SAMPLE_RATE), persistent=False)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """fake, real [B, S] -> [B] loss per utterance."""
        total = fake.new_zeros(fake.shape[0], dtype=torch.float32)
        for i, (n_fft, hop, win) in enumerate(self.resolutions):
            fbank = getattr(self, f"fbank{i}")
            # log of the magnitude mel, floored at 1e-5 (the floor taken on the power: sqrt has no gradient at 0)
            x = 0.5 * torch.log(mel_power(fake.float(), n_fft, hop, win, fbank).clamp(min=1e-10))
            y = 0.5 * torch.log(mel_power(real.float(), n_fft, hop, win, fbank).clamp(min=1e-10))
            total = total + (y - x).abs().flatten(1).sum(1) / y.abs().flatten(1).sum(1).clamp(min=1e-5)
        return total / len(self.resolutions)


def _item_mean(x: torch.Tensor) -> torch.Tensor:
    return x.float().flatten(1).mean(1)


def tprls(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Truncated pointwise relativistic LS term (StyleTTS2) per utterance: a should beat b. -> [B]."""
    diff = (a - b).float().flatten(1)
    median = diff.median(dim=1, keepdim=True).values
    selected = (diff < median).float()
    rel = (((diff - median) ** 2) * selected).sum(1) / selected.sum(1).clamp(min=1.0)
    return tau - F.relu(tau - rel)


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor], tau: float) -> torch.Tensor:
    """LSGAN + TPRLS over all sub-discriminators -> [B]."""
    total = real[0].new_zeros(real[0].shape[0], dtype=torch.float32)
    for r, g in zip(real, fake):
        total = total + _item_mean((1 - r) ** 2) + _item_mean(g**2) + tprls(r, g, tau)
    return total


def generator_loss(fake: list[torch.Tensor], real: list[torch.Tensor], tau: float) -> torch.Tensor:
    """LSGAN generator term + TPRLS -> [B]."""
    total = fake[0].new_zeros(fake[0].shape[0], dtype=torch.float32)
    for g, r in zip(fake, real):
        total = total + _item_mean((1 - g) ** 2) + tprls(g, r.detach(), tau)
    return total


def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 between discriminator feature maps of generated and real audio -> [B]."""
    total = fake[0][0].new_zeros(fake[0][0].shape[0], dtype=torch.float32)
    for fg, fr in zip(fake, real):
        for g, r in zip(fg, fr):
            total = total + _item_mean((g - r.detach()).abs())
    return total


def duration_losses(
    logits: torch.Tensor, durations: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordinal BCE and L1 of sum(sigmoid) against aligner durations, boundary tokens excluded -> [B] each.

    A duration D is the target vector [1] * D + [0] * (K - D), so that inference's sum of
    sigmoids estimates D (StyleTTS2's duration CE and duration L1).
    """
    steps = torch.arange(logits.shape[1], device=logits.device)[None]
    inner = ((steps >= 1) & (steps < lengths[:, None] - 1)).float()  # [B, T]
    bins = torch.arange(logits.shape[-1], device=logits.device)
    target = (bins[None, None, :] < durations[..., None]).float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean(-1)
    l1 = (torch.sigmoid(logits.float()).sum(-1) - durations.float()).abs()
    count = inner.sum(1).clamp(min=1.0)
    return (bce * inner).sum(1) / count, (l1 * inner).sum(1) / count


def prosody_losses(
    f0_pred: torch.Tensor, f0: torch.Tensor, energy_pred: torch.Tensor, energy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleTTS2's F0 (SmoothL1 / 10, in Hz) and energy (SmoothL1) losses on the crop -> [B] each."""
    f0_loss = F.smooth_l1_loss(f0_pred.float(), f0, reduction="none").flatten(1).mean(1) / 10.0
    energy_loss = F.smooth_l1_loss(energy_pred.float(), energy, reduction="none").flatten(1).mean(1)
    return f0_loss, energy_loss
