"""Inference fast path for the iSTFTNet generator: fused AdaIN + Snake and reduced-precision convolutions.

The generator does about 90% of Kokoro's arithmetic, and a third of its eager time goes to the
element-wise chain around every resblock convolution (instance norm, style affine, Snake). Here that
chain runs in a handful of in-place passes, and the convolutions can run in bfloat16 (fp32
accumulation, 2-3x faster on CPUs with AVX512-BF16 or AMX, and on GPUs). With ``precision="fp32"``
the result equals the reference modules to float rounding (tests/export/test_fast.py).

Shapes: B batch, C channels, L time steps; ``mask`` is [B, 1, L] (1 = valid) or None.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from koel.model.generator import AdaINResBlock1, Generator
from koel.model.layers import AdaIN1d

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]

_EPS = 1e-5


def adain_snake(
    x: torch.Tensor,
    norm: AdaIN1d,
    s: torch.Tensor,
    alpha: torch.Tensor,
    mask: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Snake(AdaIN(x)) = y + sin^2(alpha y) / alpha with y = (1 + g) IN(x) + b, masked.

    Same maths as ``snake(norm(x, s, mask), alpha) * mask``, in five passes over x instead of about
    twelve: the statistics are two reductions, the affine and the Snake run in place, and the last
    pass writes ``out_dtype`` directly (the input dtype of the next convolution).
    """
    gamma, beta = norm.fc(s).unsqueeze(-1).chunk(2, dim=1)  # [B, C, 1] each
    if mask is None:
        mean = x.mean(dim=-1, keepdim=True, dtype=torch.float32)
        y = x - mean  # fp32 even for a bf16 x (tensor-tensor type promotion)
        count = float(x.shape[-1])
    else:
        count_t = mask.sum(dim=-1, keepdim=True).clamp(min=1.0)  # [B, 1, 1]
        mean = torch.bmm(x.float(), mask.transpose(1, 2)) / count_t  # masked mean, no temporary
        y = (x - mean).mul_(mask)
    var = torch.linalg.vector_norm(y, dim=-1, keepdim=True).square_()
    var = var / (count if mask is None else count_t)
    y.mul_((1 + gamma) * torch.rsqrt(var + _EPS)).add_(beta)
    t = torch.mul(y, alpha).sin_()
    t.mul_(t)
    if mask is not None:
        y.addcmul_(t, alpha.reciprocal())
        return y.mul_(mask).to(out_dtype)
    out = torch.empty_like(y, dtype=out_dtype)
    return torch.addcmul(y, t, alpha.reciprocal(), out=out)


class FastConv1d(nn.Module):
    """A folded Conv1d's weights, run in ``dtype`` (fp32 accumulation); output in ``dtype``."""

    def __init__(self, conv: nn.Conv1d, dtype: torch.dtype) -> None:
        super().__init__()
        if conv.groups != 1 or conv.stride[0] != 1 or not isinstance(conv.padding[0], int):
            raise ValueError("FastConv1d supports plain stride-1 convolutions with integer padding")
        self.padding = int(conv.padding[0])
        self.dilation = int(conv.dilation[0])
        self.register_buffer("weight", conv.weight.detach().to(dtype).clone(), persistent=False)
        bias = None if conv.bias is None else conv.bias.detach().to(dtype).clone()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x.to(self.weight.dtype), self.weight, self.bias, padding=self.padding, dilation=self.dilation)


def _is_plain(conv: nn.Module) -> bool:
    from torch.nn.utils import parametrize

    return isinstance(conv, nn.Conv1d) and not parametrize.is_parametrized(conv)


class FastAdaINResBlock1(AdaINResBlock1):
    """AdaINResBlock1 with the fused activation and precomputed low-precision convolutions.

    It adopts the original block's submodules, so parameter names (and ``state_dict``) are unchanged.
    """

    def __init__(self, block: AdaINResBlock1, dtype: torch.dtype) -> None:
        nn.Module.__init__(self)
        self.convs1, self.convs2 = block.convs1, block.convs2
        self.adain1, self.adain2 = block.adain1, block.adain2
        self.alpha1, self.alpha2 = block.alpha1, block.alpha2
        if not all(_is_plain(c) for c in [*self.convs1, *self.convs2]):
            raise ValueError("fold weight norm first (KokoroModel.fold_weight_norm) before using the fast path")
        self.fast1 = nn.ModuleList([FastConv1d(c, dtype) for c in self.convs1])
        self.fast2 = nn.ModuleList([FastConv1d(c, dtype) for c in self.convs2])
        self.dtype = dtype

    def forward(self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.float()
        for j in range(len(self.fast1)):
            t = self.fast1[j](adain_snake(x, self.adain1[j], s, self.alpha1[j], mask, self.dtype))
            t = self.fast2[j](adain_snake(t, self.adain2[j], s, self.alpha2[j], mask, self.dtype))
            x = x + t  # fp32 residual stream
        return x


def bf16_is_fast(device: torch.device) -> bool:
    """True where bfloat16 convolutions run natively: CUDA with bf16 support, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def accelerate_generator(generator: Generator, precision: Precision = "auto") -> torch.dtype:
    """Swap the generator's resblocks for :class:`FastAdaINResBlock1` in place; returns the conv dtype."""
    dtype = resolve_precision(precision, next(generator.parameters()).device)
    for blocks in (generator.resblocks, generator.noise_res):
        for i, block in enumerate(blocks):
            original = block
            if isinstance(block, FastAdaINResBlock1):
                continue
            if not isinstance(original, AdaINResBlock1):
                raise TypeError(f"unexpected generator block {type(block).__name__}")
            blocks[i] = FastAdaINResBlock1(original, dtype)
    log.info("generator fast path: fused AdaIN+Snake, %s convolutions", str(dtype).removeprefix("torch."))
    return dtype


__all__ = [
    "FastAdaINResBlock1",
    "FastConv1d",
    "accelerate_generator",
    "adain_snake",
    "bf16_is_fast",
    "resolve_precision",
]
