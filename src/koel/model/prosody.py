"""Prosody predictor: durations per token, then F0 and energy curves per half-frame.

Shapes: B batch, T tokens, F duration frames (25 ms), D = hidden_dim, S = style_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from koel.model.layers import AdainResBlk1d, AdaLayerNorm, LinearNorm, apply_mask, masked_lstm


class DurationEncoder(nn.Module):
    """Alternating BiLSTM / AdaLayerNorm blocks; the prosodic style is re-appended after each."""

    def __init__(self, style_dim: int, d_model: int, n_layers: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.lstms = nn.ModuleList()
        for _ in range(n_layers):
            self.lstms.append(
                nn.LSTM(d_model + style_dim, d_model // 2, batch_first=True, bidirectional=True)
            )
            self.lstms.append(AdaLayerNorm(style_dim, d_model))
        self.dropout = dropout

    def forward(
        self, d_en: torch.Tensor, s: torch.Tensor, lengths: torch.Tensor | None, mask: torch.Tensor | None
    ):
        """d_en [B, D, T], s [B, S] -> [B, T, D + S]. ``mask`` is [B, T, 1] (1 = valid) or None."""
        style = s[:, None, :].expand(-1, d_en.shape[-1], -1)
        x = torch.cat([d_en.transpose(1, 2), style], dim=-1)
        x = apply_mask(x, mask)
        for block in self.lstms:
            if isinstance(block, AdaLayerNorm):
                x = torch.cat([block(x, s), style], dim=-1)
                x = apply_mask(x, mask)
            else:
                assert isinstance(block, nn.LSTM)
                x = masked_lstm(block, x, lengths)
                x = F.dropout(x, p=self.dropout, training=self.training)
        return x


class ProsodyPredictor(nn.Module):
    def __init__(self, style_dim: int, d_hid: int, n_layers: int, max_dur: int = 50, dropout: float = 0.1):
        super().__init__()
        self.text_encoder = DurationEncoder(style_dim, d_hid, n_layers, dropout)
        self.lstm = nn.LSTM(d_hid + style_dim, d_hid // 2, batch_first=True, bidirectional=True)
        self.duration_proj = LinearNorm(d_hid, max_dur)
        self.shared = nn.LSTM(d_hid + style_dim, d_hid // 2, batch_first=True, bidirectional=True)
        self.F0 = nn.ModuleList(
            [
                AdainResBlk1d(d_hid, d_hid, style_dim, dropout=dropout),
                AdainResBlk1d(d_hid, d_hid // 2, style_dim, upsample=True, dropout=dropout),
                AdainResBlk1d(d_hid // 2, d_hid // 2, style_dim, dropout=dropout),
            ]
        )
        self.N = nn.ModuleList(
            [
                AdainResBlk1d(d_hid, d_hid, style_dim, dropout=dropout),
                AdainResBlk1d(d_hid, d_hid // 2, style_dim, upsample=True, dropout=dropout),
                AdainResBlk1d(d_hid // 2, d_hid // 2, style_dim, dropout=dropout),
            ]
        )
        self.F0_proj = nn.Conv1d(d_hid // 2, 1, 1, 1, 0)
        self.N_proj = nn.Conv1d(d_hid // 2, 1, 1, 1, 0)

    def duration_logits(self, d: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """d [B, T, D + S] -> ordinal duration logits [B, T, max_dur]."""
        x = masked_lstm(self.lstm, d, lengths)
        return self.duration_proj(F.dropout(x, 0.5, training=self.training))

    def f0_energy(
        self, en: torch.Tensor, s: torch.Tensor, frame_lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame features en [B, D + S, F] -> F0 (Hz) and energy, each [B, 2F]."""
        mask = None
        if frame_lengths is not None and bool((frame_lengths < en.shape[-1]).any()):
            steps = torch.arange(en.shape[-1], device=en.device)
            mask = (steps[None, :] < frame_lengths[:, None]).unsqueeze(1).float()
        else:
            frame_lengths = None
        x = masked_lstm(self.shared, en.transpose(1, 2), frame_lengths).transpose(1, 2)
        up_mask = None if mask is None else mask.repeat_interleave(2, dim=-1)
        outputs = []
        for blocks, proj in ((self.F0, self.F0_proj), (self.N, self.N_proj)):
            h = x
            for i, block in enumerate(blocks):
                h = block(h, s, mask if i < 2 else up_mask, None if i < 1 else up_mask)
            outputs.append(apply_mask(proj(h), up_mask).squeeze(1))
        return outputs[0], outputs[1]
