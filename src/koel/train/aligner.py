"""Durations without external models: a small text-mel aligner trained on the corpus, then MAS.

Why this design: StyleTTS2 gets durations from a pretrained seq2seq ASR (not available offline
and English-only). A forward-sum aligner (the RAD-TTS "one alignment to rule them all" idea) needs
no pretrained parts and works for any language: phoneme embeddings and mel frames are encoded by
small conv stacks, their negative squared distance gives a soft attention over tokens for every
frame, and a CTC-style forward-sum loss maximises the likelihood of all monotonic paths. Phoneme
keys have no context and frame queries only 75 ms, so the attention cannot settle on a shifted
but equally likely alignment (a test checks recovery of known durations). A beta-binomial prior along the diagonal makes it converge in a few hundred steps. Monotonic
alignment search (Viterbi) over the learned log-attention then gives integer durations in 25 ms
frames, one per token including the two boundary tokens (they absorb leading/trailing silence),
every token at least one frame and the total exactly the clip's frame count.

Shapes: B batch, T tokens, F frames (25 ms), M mel bins, C channels.
"""

from __future__ import annotations

import logging
import math
import random
import time
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from koel.tokenizer import N_TOKEN
from koel.train.config import AlignerConfig

log = logging.getLogger(__name__)


class AlignerNet(nn.Module):
    """Phoneme keys and mel queries; attention logits are -distance between them."""

    def __init__(self, n_mels: int = 80, channels: int = 128, n_token: int = N_TOKEN) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_token, channels)
        # Keys see only their own phoneme (1x1 convs): with context on the text side the aligner can
        # settle on a consistent one-token shift that the forward-sum loss cannot tell apart.
        self.text = nn.Sequential(
            nn.Conv1d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1),
        )
        # Queries see three frames (75 ms); wider mel context likewise lets boundaries drift.
        self.mel = nn.Sequential(
            nn.Conv1d(n_mels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1),
        )
        self.temperature = 1.0 / math.sqrt(channels)

    def forward(
        self,
        ids: torch.Tensor,
        mel: torch.Tensor,
        lengths: torch.Tensor,
        frames: torch.Tensor,
        log_prior: torch.Tensor | None,
    ) -> torch.Tensor:
        """ids [B, T], mel [B, M, F] (frame rate) -> log-attention [B, F, T] (log-softmax over valid tokens)."""
        keys = self.text(self.embed(ids).transpose(1, 2))  # [B, C, T]
        queries = self.mel(mel)  # [B, C, F]
        dist = (
            queries.pow(2).sum(1)[:, :, None]
            + keys.pow(2).sum(1)[:, None, :]
            - 2 * torch.einsum("bcf,bct->bft", queries, keys)
        )
        logits = -self.temperature * dist
        token_mask = torch.arange(ids.shape[1], device=ids.device)[None, None, :] < lengths[:, None, None]
        logits = logits.masked_fill(~token_mask, -1e4)
        logp = torch.log_softmax(logits, dim=-1)
        if log_prior is not None:
            logp = torch.log_softmax(logp + log_prior, dim=-1).masked_fill(~token_mask, -1e4)
        frame_mask = torch.arange(mel.shape[-1], device=mel.device)[None, :, None] < frames[:, None, None]
        return logp.masked_fill(~frame_mask, 0.0)


@lru_cache(maxsize=2048)
def beta_binomial_log_prior(n_tokens: int, n_frames: int, scale: float = 1.0) -> torch.Tensor:
    """log P(token | frame) [F, T] of a beta-binomial that walks the diagonal (RAD-TTS's prior)."""
    k = torch.arange(n_tokens, dtype=torch.float64)[None, :]
    f = torch.arange(1, n_frames + 1, dtype=torch.float64)[:, None]
    a, b = scale * f, scale * (n_frames + 1 - f)
    n = n_tokens - 1

    def lbeta(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)

    log_choose = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return (log_choose + lbeta(k + a, n - k + b) - lbeta(a, b)).float()


def forward_sum_loss(
    logp: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor, blank_logprob: float = -1.0
) -> torch.Tensor:
    """CTC over the token sequence 1..T with a blank: -log of all monotonic alignments, per frame."""
    total = logp.new_zeros(())
    for b in range(logp.shape[0]):
        n_t, n_f = int(lengths[b]), int(frames[b])
        lp = F.pad(logp[b, :n_f, :n_t], (1, 0), value=blank_logprob).log_softmax(-1)
        target = torch.arange(1, n_t + 1, device=logp.device)[None]
        loss = F.ctc_loss(
            lp[:, None],
            target,
            torch.tensor([n_f]),
            torch.tensor([n_t]),
            blank=0,
            reduction="sum",
            zero_infinity=True,
        )
        total = total + loss / n_f
    return total / logp.shape[0]


def monotonic_alignment(logp: np.ndarray) -> np.ndarray:
    """Best monotonic path through logp [F, T] (F >= T) -> durations [T], each >= 1, summing to F."""
    n_f, n_t = logp.shape
    if n_f < n_t:
        raise ValueError(f"cannot align {n_t} tokens to only {n_f} frames")
    value = np.full(n_t, -np.inf)
    value[0] = logp[0, 0]
    moved = np.zeros((n_f, n_t), dtype=bool)
    for f in range(1, n_f):
        shifted = np.concatenate([[-np.inf], value[:-1]])
        move = shifted > value
        value = np.where(move, shifted, value) + logp[f]
        moved[f] = move
    durations = np.zeros(n_t, dtype=np.int64)
    t = n_t - 1
    for f in range(n_f - 1, -1, -1):
        durations[t] += 1
        if moved[f, t]:
            t -= 1
    return durations


def frame_mel(mel: torch.Tensor) -> torch.Tensor:
    """Mel at 80 Hz [M, 2F] -> frame rate [M, F] (mean of each pair)."""
    return mel[:, : mel.shape[-1] // 2 * 2].reshape(mel.shape[0], -1, 2).mean(-1)


def _load(cache_file: str) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(cache_file, framework="pt") as f:
        return f.get_tensor("ids"), frame_mel(f.get_tensor("mel"))


def _batch(files: list[str], prior_scale: float) -> tuple[torch.Tensor, ...]:
    rows = [_load(f) for f in files]
    width_t = max(r[0].shape[0] for r in rows)
    width_f = max(r[1].shape[-1] for r in rows)
    ids = torch.zeros(len(rows), width_t, dtype=torch.long)
    mel = torch.zeros(len(rows), rows[0][1].shape[0], width_f)
    prior = torch.zeros(len(rows), width_f, width_t)
    for b, (i, m) in enumerate(rows):
        ids[b, : len(i)] = i
        mel[b, :, : m.shape[-1]] = m
        if prior_scale > 0:
            prior[b, : m.shape[-1], : len(i)] = beta_binomial_log_prior(len(i), m.shape[-1], prior_scale)
    lengths = torch.tensor([len(r[0]) for r in rows])
    frames = torch.tensor([r[1].shape[-1] for r in rows])
    return ids, mel, lengths, frames, prior


def train_aligner(files: list[str], cfg: AlignerConfig, seed: int = 0) -> tuple[AlignerNet, list[float]]:
    """Fit the aligner on the cached clips (``Item.cache_file``); returns it and the loss curve."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = AlignerNet(channels=cfg.channels)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    picker = random.Random(seed)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.steps):
        chosen = picker.sample(files, min(cfg.batch_size, len(files)))
        ids, mel, lengths, frames, prior = _batch(chosen, cfg.prior_scale)
        mel = mel + 0.01 * torch.randn(mel.shape, generator=gen)
        logp = net(ids, mel, lengths, frames, prior if cfg.prior_scale > 0 else None)
        loss = forward_sum_loss(logp, lengths, frames)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == cfg.steps - 1:
            log.info("aligner step %d/%d: forward-sum loss %.3f", step + 1, cfg.steps, losses[-1])
    log.info("aligner trained in %.1f s", time.perf_counter() - start)
    return net, losses


@torch.no_grad()
def align(net: AlignerNet, cache_file: str, prior_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Durations [T] (frames per token) and the log-attention [F, T] for one cached clip."""
    ids, mel, lengths, frames, prior = _batch([cache_file], prior_scale)
    logp = net.eval()(ids, mel, lengths, frames, prior if prior_scale > 0 else None)[0].numpy()
    return monotonic_alignment(logp), logp
