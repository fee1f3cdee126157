"""One generator forward pass of training: learned voice rows, prosody, a decoder crop, the losses.

The decoder runs on a random crop of each utterance (StyleTTS2 stage 1/2): aligned text features,
ground-truth F0 and energy and the acoustic style go in, the crop's waveform comes out. The prosody
predictor sees the whole utterance: durations against the aligner, F0/energy on the crop.

Shapes: B batch, T tokens, F frames (25 ms), L crop frames, V voice dim, S = 600 L samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from koel.constants import FRAME_SAMPLES, VOICE_ROWS
from koel.model import KokoroModel, alignment_from_durations
from koel.train.dataset import Batch
from koel.train.losses import MultiResolutionMelLoss, duration_losses, prosody_losses


class VoiceBank(nn.Module):
    """One learnable voice pack [510, V] per speaker: a starting pack plus a learned shift.

    row(n) = base[n - 1] + offset + slope * (n / 510 - 1/2). Few clips cover few phoneme counts, so
    learning all 510 rows freely would leave most untouched; a shared offset with a length slope
    moves the whole pack and keeps the starting pack's smooth dependence on length.
    """

    def __init__(self, base: torch.Tensor) -> None:
        super().__init__()
        if base.ndim == 2:
            base = base[None]
        self.base: torch.Tensor
        self.register_buffer("base", base.float().clone())
        self.offset = nn.Parameter(torch.zeros(base.shape[0], base.shape[-1]))
        self.slope = nn.Parameter(torch.zeros(base.shape[0], base.shape[-1]))

    def rows(self, speakers: torch.Tensor, n_phonemes: torch.Tensor) -> torch.Tensor:
        """speakers [B], n_phonemes [B] -> style rows [B, V] (the pipeline's pack[n - 1])."""
        index = n_phonemes.clamp(1, self.base.shape[1]) - 1
        position = (index.float() + 1) / VOICE_ROWS - 0.5
        return self.base[speakers, index] + self.offset[speakers] + self.slope[speakers] * position[:, None]

    def pack(self, speaker: int = 0) -> torch.Tensor:
        """The full learned pack [510, V] of one speaker."""
        position = torch.arange(1, self.base.shape[1] + 1, device=self.base.device).float() / VOICE_ROWS - 0.5
        return (self.base[speaker] + self.offset[speaker] + self.slope[speaker] * position[:, None]).detach()


@dataclass
class StepOutput:
    fake: torch.Tensor  # [B, S] generated crop
    real: torch.Tensor  # [B, S] recorded crop
    losses: dict[str, torch.Tensor]  # name -> [B] per-utterance values


def crop_starts(
    batch: Batch, crop_frames: int, seed: int, step: int, deterministic: bool = False
) -> torch.Tensor:
    """Crop start frame per utterance, from (seed, step, dataset index): the same on any rank split."""
    starts = []
    for frames, index in zip(batch.frames.tolist(), batch.index.tolist()):
        room = max(0, frames - crop_frames)
        if deterministic:
            starts.append(room // 2)
        else:
            starts.append(int(np.random.default_rng([seed, step, index]).integers(0, room + 1)))
    return torch.tensor(starts, device=batch.frames.device)


def _window(x: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """x [B, ..., N] -> x[b, ..., starts[b] : starts[b] + width] stacked."""
    index = starts[:, None] + torch.arange(width, device=x.device)[None]
    shape = (*x.shape[:-1], width)
    index = index.reshape(index.shape[0], *([1] * (x.ndim - 2)), width).expand(shape)
    return x.gather(-1, index)


class TrainingModel(nn.Module):
    """The Kokoro model and the learned voices, as one module for DDP."""

    def __init__(self, model: KokoroModel, voices: VoiceBank, crop_frames: int) -> None:
        super().__init__()
        self.model = model
        self.voices = voices
        self.crop_frames = crop_frames
        self.mel_loss = MultiResolutionMelLoss()

    def forward(self, batch: Batch, starts: torch.Tensor) -> StepOutput:
        model, length = self.model, self.crop_frames
        ref_s = self.voices.rows(batch.speakers, batch.n_phonemes)
        s_a, s_p = model._split_style(ref_s)
        lengths = batch.lengths
        d, logits = model.prosody_features(batch.ids, lengths, s_p)
        dur_ce, dur_l1 = duration_losses(logits, batch.durations, lengths)

        alignment = _window(alignment_from_durations(batch.durations), starts, length)  # [B, T, L]
        en = d.transpose(1, 2) @ alignment
        f0_pred, energy_pred = model.predictor.f0_energy(en, s_p)
        f0 = _window(batch.f0, 2 * starts, 2 * length)
        energy = _window(batch.energy, 2 * starts, 2 * length)
        f0_loss, energy_loss = prosody_losses(f0_pred, f0, energy_pred, energy)

        token_mask = (
            torch.arange(batch.ids.shape[1], device=lengths.device)[None] < lengths[:, None]
        ).unsqueeze(1)
        t_en = model.text_encoder(batch.ids, lengths, token_mask.float())
        asr = t_en @ alignment
        spec = model.decoder(asr, f0, energy, s_a)
        fake = model.decoder.generator.spectrogram_to_audio(spec.float())
        real = _window(batch.audio, FRAME_SAMPLES * starts, FRAME_SAMPLES * length)
        losses = {
            "mel": self.mel_loss(fake, real),
            "f0": f0_loss,
            "energy": energy_loss,
            "duration_ce": dur_ce,
            "duration_l1": dur_l1,
        }
        return StepOutput(fake=fake, real=real, losses=losses)
