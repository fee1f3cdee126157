"""The space new voices live in: blends of the official packs plus a small, regularised offset.

A pack is [510, 256] (one style row per phoneme count). A created voice is

    pack = sum_k softmax(logits)_k * P_k  +  scale * offset        (offset broadcast over rows)

where P_k are official packs, ``scale`` [256] is the spread of the official voices per dimension
and ``offset`` is penalised towards zero. The blend keeps the length-dependent row structure of
real packs and stays inside the region the model was trained on; the offset lets timbre and
prosody move past what any blend can reach, measured in units of "how much voices differ".
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from koel.constants import VOICE_ROWS
from koel.voices import OFFICIAL_VOICES, Voice, VoiceError, VoiceStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceBank:
    """Named packs stacked as one tensor [N, 510, 256]."""

    names: tuple[str, ...]
    packs: torch.Tensor

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def subset(self, names: list[str] | tuple[str, ...]) -> VoiceBank:
        return VoiceBank(tuple(names), self.packs[[self.index(n) for n in names]])

    @property
    def scale(self) -> torch.Tensor:
        """Per-dimension spread [256] of the voices' mean rows (floored to keep every dim movable)."""
        means = self.packs.mean(dim=1)
        spread = means.std(dim=0) if len(self) > 1 else means.abs().mean(dim=0)
        return spread.clamp_min(0.1 * float(spread.mean()))

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, pack in zip(self.names, self.packs):
            h.update(name.encode())
            h.update(pack.numpy().tobytes())
        return h.hexdigest()[:16]


def official_bank(store: VoiceStore | None = None, names: tuple[str, ...] | None = None) -> VoiceBank:
    """The official voices that ``store`` can load (all 54 with KOEL_VOICES_DIR set, else fewer)."""
    store = store or VoiceStore()
    found: list[Voice] = []
    for name in names or OFFICIAL_VOICES:
        try:
            found.append(store.find(name))
        except VoiceError:
            continue
    if not found:
        raise VoiceError(
            "no official voice packs found: voice creation blends them; set KOEL_VOICES_DIR to a folder "
            "with the Kokoro voices (af_heart.pt, ...)"
        )
    if len(found) < len(names or OFFICIAL_VOICES):
        log.info("voice bank: %d of %d official voices available", len(found), len(names or OFFICIAL_VOICES))
    packs = torch.stack([_full_pack(v) for v in found])
    return VoiceBank(tuple(v.name for v in found), packs)


def _full_pack(voice: Voice) -> torch.Tensor:
    pack = voice.pack
    if pack.shape[0] < VOICE_ROWS:  # short packs repeat their last row, as Voice.row clamps
        pack = torch.cat([pack, pack[-1:].expand(VOICE_ROWS - pack.shape[0], -1)])
    return pack


class StyleParams(nn.Module):
    """Blend logits over K candidate packs plus a scaled offset; the trainable part of a new voice."""

    packs: torch.Tensor
    scale: torch.Tensor

    def __init__(self, bank: VoiceBank, init_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("packs", bank.packs.clone(), persistent=False)
        self.register_buffer("scale", bank.scale.clone(), persistent=False)
        self.names = bank.names
        weights = init_weights if init_weights is not None else torch.full((len(bank),), 1.0 / len(bank))
        self.logits = nn.Parameter(torch.log(weights.clamp_min(1e-6) / weights.sum()))
        self.offset = nn.Parameter(torch.zeros(bank.packs.shape[-1]))

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def rows(self, n_phonemes: list[int]) -> torch.Tensor:
        """Style rows [B, 256] for utterances of the given phoneme counts (differentiable)."""
        index = torch.tensor([min(max(n, 1), VOICE_ROWS) - 1 for n in n_phonemes])
        base = torch.einsum("k,kbd->bd", self.weights, self.packs[:, index])
        return base + self.scale * self.offset

    def pack(self) -> torch.Tensor:
        """The whole voice [510, 256] (detached)."""
        with torch.no_grad():
            return torch.einsum("k,krd->rd", self.weights, self.packs) + self.scale * self.offset

    def offset_penalty(self) -> torch.Tensor:
        """Mean squared offset in units of the voices' spread (0 = inside the blend space)."""
        return self.offset.pow(2).mean()

    def describe(self, top: int = 5) -> str:
        w = self.weights.detach()
        order = torch.argsort(w, descending=True)[:top]
        parts = " + ".join(f"{self.names[int(i)]}:{float(w[i]):.2f}" for i in order)
        return f"{parts}, offset {float(self.offset.detach().pow(2).mean().sqrt()):.2f} sd"
