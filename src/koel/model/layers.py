"""Building blocks shared by the prosody predictor, decoder and generator.

Shape legend: B batch, C channels, L time steps. ``mask`` is a float tensor [B, 1, L] that is 1 on
valid steps and 0 on padding; ``None`` means every step is valid (the fast batch-1 path).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

_BUILD = {"weight_norm": True}
_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "xavier_uniform_",
    "kaiming_uniform_",
    "zeros_",
    "ones_",
    "orthogonal_",
)


@contextlib.contextmanager
def inference_build() -> Iterator[None]:
    """Build modules for loading trained weights: plain convs (weight norm folded) and no random init.

    Random initialisation of 82M parameters costs seconds and is overwritten by the weights anyway.
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    _BUILD["weight_norm"] = False
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        _BUILD["weight_norm"] = True
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def wn_conv1d(*args: object, **kwargs: object) -> nn.Conv1d:
    """A weight-normalised Conv1d, as in StyleTTS2 (g over output channels)."""
    conv = nn.Conv1d(*args, **kwargs)  # type: ignore[arg-type]
    return weight_norm(conv) if _BUILD["weight_norm"] else conv


def wn_conv_transpose1d(*args: object, **kwargs: object) -> nn.ConvTranspose1d:
    """A weight-normalised ConvTranspose1d (dim 0 of its weight is the input channel)."""
    conv = nn.ConvTranspose1d(*args, **kwargs)  # type: ignore[arg-type]
    return weight_norm(conv) if _BUILD["weight_norm"] else conv


def raw_weight(conv: nn.Module) -> torch.Tensor:
    """The trainable direction tensor of a (possibly weight-normalised) conv."""
    weight = getattr(conv, "weight", None)
    if hasattr(conv, "parametrizations"):
        weight = conv.parametrizations["weight"].original1  # type: ignore[union-attr,index]
    assert isinstance(weight, torch.Tensor)
    return weight


def apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> [B, 1, max_len] float mask."""
    steps = torch.arange(max_len, device=lengths.device)
    return (steps[None, :] < lengths[:, None]).unsqueeze(1).float()


def instance_norm(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm over time per channel (biased variance); statistics over valid steps only."""
    if mask is None:
        return F.instance_norm(x, eps=eps)
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1.0)
    mean = (x * mask).sum(dim=-1, keepdim=True) / count
    var = (((x - mean) * mask) ** 2).sum(dim=-1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps)


class LinearNorm(nn.Module):
    """A Linear layer (kept as its own module so parameter names match the official checkpoint)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.linear_layer = nn.Linear(in_dim, out_dim, bias=bias)
        nn.init.xavier_uniform_(self.linear_layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_layer(x)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a [B, C, L] tensor (parameters ``gamma``/``beta``)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class AdaLayerNorm(nn.Module):
    """Style-conditioned LayerNorm over channels of a [B, L, C] tensor: (1 + g) * LN(x) + b."""

    def __init__(self, style_dim: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s).unsqueeze(1).chunk(2, dim=-1)  # [B, 1, C] each
        return (1 + gamma) * F.layer_norm(x, (self.channels,), eps=self.eps) + beta


class AdaIN1d(nn.Module):
    """Adaptive instance norm: (1 + g) * IN(x) + b with g, b from the style vector.

    The official model builds an affine InstanceNorm whose parameters are never trained (and are
    absent from the checkpoint), so the norm here has no affine part.
    """

    def __init__(self, style_dim: int, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        gamma, beta = self.style(s)
        return apply_mask((1 + gamma) * instance_norm(x, mask) + beta, mask)

    def style(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) = ``fc(s)``, [B, C, 1] each. An accelerated model's layers read theirs from
        the product their group shares (``style_projections``: koel.model.fast.StyleProjections, its
        rows' start and the channel count), except while traced: an ONNX graph keeps each layer's own
        product."""
        shared = self.__dict__.get("style_projections")
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if shared is None or tracing or s.device != shared[0].weight.device:
            gamma, beta = self.fc(s).unsqueeze(-1).chunk(2, dim=1)
            return gamma, beta
        projections, start, channels = shared
        return projections(start, channels, s)


class AdainResBlk1d(nn.Module):
    """StyleTTS2 residual block: AdaIN -> LReLU -> (upsample) -> conv -> AdaIN -> LReLU -> conv.

    With ``upsample`` the time axis doubles: a depthwise transposed conv (``pool``) in the residual
    branch and nearest-neighbour repetition in the shortcut.
    """

    def __init__(
        self, dim_in: int, dim_out: int, style_dim: int, upsample: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.dropout = nn.Dropout(dropout)
        self.conv1 = wn_conv1d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = wn_conv1d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN1d(style_dim, dim_in)
        self.norm2 = AdaIN1d(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = wn_conv1d(dim_in, dim_out, 1, 1, 0, bias=False)
        if upsample:
            self.pool = wn_conv_transpose1d(
                dim_in, dim_in, kernel_size=3, stride=2, groups=dim_in, padding=1, output_padding=1
            )

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.learned_sc:
            x = self.conv1x1(x)
        return x

    def _residual(
        self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None, out_mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = F.leaky_relu(self.norm1(x, s, mask), 0.2)
        if self.upsample:
            x = apply_mask(self.pool(x), out_mask)
        x = self.conv1(self.dropout(x))
        x = F.leaky_relu(self.norm2(x, s, out_mask), 0.2)
        return self.conv2(self.dropout(x))

    def forward(
        self,
        x: torch.Tensor,
        s: torch.Tensor,
        mask: torch.Tensor | None = None,
        out_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, C_in, L] -> [B, C_out, L or 2L]; ``out_mask`` is the mask at the output rate."""
        if out_mask is None and mask is not None:
            out_mask = mask.repeat_interleave(2, dim=-1) if self.upsample else mask
        return (self._residual(x, s, mask, out_mask) + self._shortcut(x)) * (1.0 / math.sqrt(2.0))


def masked_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Run a batch-first (Bi)LSTM over [B, L, C], packing by ``lengths`` so padding never leaks in."""
    if lengths is None:
        return lstm(x)[0]
    total = x.shape[1]
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=total)
    return out
