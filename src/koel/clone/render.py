"""Run the frozen Kokoro model with gradients to the style only, on a crop of the waveform.

The stages before the generator (PL-BERT, prosody, text encoder, decoder blocks) are cheap and
run on the whole utterance; the iSTFTNet generator (90 % of the compute) runs on a random crop
of the decoder output, as StyleTTS2 trains on crops. Durations are rounded (not differentiable),
but their soft sum (sum of sigmoids) is returned for a speaking-rate loss.

Shapes: T tokens (with boundaries), F duration frames (25 ms), L crop length in F0 steps (12.5 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from koel.constants import F0_HOP, SAMPLE_RATE
from koel.model import KokoroModel
from koel.model.kokoro import alignment_from_durations
from koel.tokenizer import encode, with_boundaries


@dataclass
class Utterance:
    """Phonemes to speak during optimisation (ids include the boundary tokens)."""

    phonemes: str
    ids: torch.Tensor  # [1, T] long

    @classmethod
    def from_phonemes(cls, phonemes: str) -> Utterance:
        return cls(phonemes, torch.tensor([with_boundaries(encode(phonemes))], dtype=torch.long))

    @property
    def n_phonemes(self) -> int:
        """Row index rule of the pipeline: the length of the phoneme string."""
        return len(self.phonemes)


@dataclass
class RenderOut:
    audio: torch.Tensor  # [1, L * 300] samples of the crop
    f0: torch.Tensor  # [1, 2F] Hz, the whole utterance
    energy: torch.Tensor  # [1, 2F] predicted log energy
    soft_frames: torch.Tensor  # [] sum of soft durations over the phonemes (boundaries excluded)
    n_tokens: int  # phonemes actually spoken (ids without the boundaries)


def freeze(model: KokoroModel) -> KokoroModel:
    """Eval mode, no parameter gradients: only the style receives gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def decoder_features(
    model: KokoroModel, asr: torch.Tensor, f0: torch.Tensor, energy: torch.Tensor, s_a: torch.Tensor
) -> torch.Tensor:
    """The decoder without its generator: asr [1, D, F], f0/energy [1, 2F] -> [1, C, 2F].

    Mirrors ``Decoder.forward`` for an unpadded batch of one.
    """
    dec = model.decoder
    f0c = dec.F0_conv(f0.unsqueeze(1))
    nc = dec.N_conv(energy.unsqueeze(1))
    x = dec.encode(torch.cat([asr, f0c, nc], dim=1), s_a)
    asr_res = dec.asr_res(asr)
    for block in dec.decode:
        x = block(torch.cat([x, asr_res, f0c, nc], dim=1), s_a)
    return x


def render_crop(
    model: KokoroModel, utt: Utterance, style: torch.Tensor, crop_steps: int, rng: np.random.Generator
) -> RenderOut:
    """Speak ``utt`` with ``style`` [1, 256]; generate audio for a random crop of ``crop_steps``."""
    half = model.config.style_dim
    s_a, s_p = style[:, :half], style[:, half:]
    ids = utt.ids.to(style.device)
    d, logits = model.prosody_features(ids, None, s_p)
    soft = torch.sigmoid(logits).sum(dim=-1)[0]  # [T]
    durations = soft.detach().round().clamp(min=1).long()[None]
    alignment = alignment_from_durations(durations)
    en = d.transpose(1, 2) @ alignment
    f0, energy = model.predictor.f0_energy(en, s_p, None)
    asr = model.text_encoder(ids, None, None) @ alignment
    x = decoder_features(model, asr, f0, energy, s_a)
    steps = x.shape[-1]
    length = min(crop_steps, steps)
    start = int(rng.integers(0, steps - length + 1))
    gen = model.decoder.generator
    spec = gen(x[..., start : start + length], s_a, f0[:, start : start + length])
    audio = gen.spectrogram_to_audio(spec)
    return RenderOut(
        audio=audio, f0=f0, energy=energy, soft_frames=soft[1:-1].sum(), n_tokens=int(ids.shape[1]) - 2
    )


@torch.no_grad()
def speak(model: KokoroModel, utt: Utterance, style: torch.Tensor) -> np.ndarray:
    """Whole utterance with a fixed style row [1, 256] -> float32 audio at 24 kHz."""
    out = model.synthesize(utt.ids.to(model.device), style.to(model.device))
    return out.item_audio(0).float().cpu().numpy()


def seconds_to_steps(seconds: float) -> int:
    """Crop length in F0 steps (12.5 ms), even so that it maps to whole duration frames."""
    steps = round(seconds * SAMPLE_RATE / F0_HOP)
    return max(2, steps - steps % 2)
