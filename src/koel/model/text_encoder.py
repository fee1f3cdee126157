"""Text encoder: phoneme embeddings -> 3 conv blocks -> BiLSTM (the acoustic text features).

Shapes: B batch, T tokens, C channels (hidden_dim).
"""

from __future__ import annotations

import torch
from torch import nn

from koel.model.layers import ChannelLayerNorm, apply_mask, masked_lstm, wn_conv1d


class TextEncoder(nn.Module):
    def __init__(self, channels: int, kernel_size: int, depth: int, n_symbols: int, dropout: float = 0.2):
        super().__init__()
        self.embedding = nn.Embedding(n_symbols, channels)
        padding = (kernel_size - 1) // 2
        self.cnn = nn.ModuleList(
            [
                nn.Sequential(
                    wn_conv1d(channels, channels, kernel_size=kernel_size, padding=padding),
                    ChannelLayerNorm(channels),
                    nn.LeakyReLU(0.2),
                    nn.Dropout(dropout),
                )
                for _ in range(depth)
            ]
        )
        self.lstm = nn.LSTM(channels, channels // 2, batch_first=True, bidirectional=True)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None, mask: torch.Tensor | None):
        """ids [B, T] -> features [B, C, T]. ``mask`` is [B, 1, T] (1 = valid) or None."""
        x = apply_mask(self.embedding(input_ids).transpose(1, 2), mask)
        for block in self.cnn:
            x = apply_mask(block(x), mask)
        x = masked_lstm(self.lstm, x.transpose(1, 2), lengths).transpose(1, 2)
        return apply_mask(x, mask)


__all__ = ["TextEncoder"]
