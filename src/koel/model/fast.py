"""Inference fast path: fused AdaIN + Snake, block-DFT convolutions and reduced-precision convolutions.

The iSTFTNet generator does about 90% of Kokoro's arithmetic (most of it in 7- and 11-tap resblock
convolutions), and a third of its eager time went to the element-wise chain around each of them.
:func:`accelerate` swaps the decoder, generator and F0/energy blocks of a loaded model, in place, for
subclasses that keep every parameter (same ``state_dict``) and compute the same function faster:

* ``adain_snake``: instance norm + style affine + Snake in about seven memory passes instead of twelve;
* :class:`BlockDFTConv1d`: long kernels, dilated ones polyphase, as overlap-save products in the
  frequency domain (3-5x fewer multiply-adds): batched GEMMs between two transforms that run in
  koel's compiled kernel (:mod:`koel.model.native`) where a C compiler is found, else as GEMMs;
* optional bfloat16 convolutions (fp32 accumulation, fp32 residual stream) where the hardware runs
  them natively (AVX512-BF16 / AMX CPUs, recent GPUs);
* PL-BERT's products in int8 with dynamically quantised activations, as the official int8 export
  runs them, where the weights are exact int8 (the embedded ones, dequantised from that export):
  :class:`FastLinear`.

With ``precision="fp32"`` the outputs equal the reference modules to float rounding; ``"bf16"`` adds
about 0.3% relative error per convolution (tests/export/test_fast.py, quality in bench/speed.py).

Shapes: B batch, C channels, L time steps; ``mask`` is [B, 1, L] (1 = valid) or None.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar, copy_context
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from koel.memory import trim
from koel.model import native
from koel.model.generator import AdaINResBlock1, Generator, snake
from koel.model.layers import AdaIN1d, AdainResBlk1d, apply_mask

if TYPE_CHECKING:
    from koel.model.generator import Decoder
    from koel.model.kokoro import KokoroModel

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]

_EPS = 1e-5  # instance-norm epsilon of AdaIN1d

#: While a tiled generator runs: AdaIN statistics accumulated over the tiles so far, per norm module
#: (mean, centred sum of squares, count), so each tile normalises over everything from the utterance's start
#: to its own end rather than over its own span alone (see :func:`generate_tiles`).
_RUNNING_STATS: ContextVar[dict[object, tuple] | None] = ContextVar("koel_running_adain_stats", default=None)


def exporting() -> bool:
    """True while torch traces the model (ONNX export): use only traceable, shape-generic code."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _cos_(t: torch.Tensor) -> torch.Tensor:
    """In-place cosine. NumPy's AVX-512 float32 cosine is about 2x faster per core than torch's on CPU.

    (Cutting large tensors in two halves for two threads was 3% slower over bench/speed.py's 30
    sentences: the helper thread competes with torch's spinning OpenMP workers.)
    """
    if (
        t.device.type == "cpu"
        and t.dtype == torch.float32
        and t.is_contiguous()
        and not (t.requires_grad or exporting())
    ):
        a = t.numpy()
        np.cos(a, out=a)
        return t
    return t.cos_()


class StyleProjections:
    """The style projections of a group of AdaIN layers that read the same style vector (the decoder
    and generator, or the F0 and energy blocks), as one matrix product per style vector.

    Each AdaIN layer turns the style into its (gamma, beta) by a Linear of its own: about 70 small
    products per utterance that read 32 MB of weights, each from memory, each a call of its own (on a
    stream's first tile 73 calls, 5 of its first 140 ms). Here the layers' weights are rows of one
    matrix (their ``fc`` parameters become views of it, so nothing is held twice) and the first layer
    to ask for a new style vector computes every layer's projection of it at once; the others read
    theirs from that product until another style vector comes (the tensor itself and its version
    counter, so a vector changed in place counts as new). Each layer finds its rows through
    :meth:`AdaIN1d.style`.
    """

    def __init__(self, norms: list[AdaIN1d]) -> None:
        fcs = [cast(nn.Linear, n.fc) for n in norms]
        if any(fc.bias is None for fc in fcs) or len({fc.in_features for fc in fcs}) > 1:
            raise ValueError("style projections need Linear layers with a bias over one style size")
        first = fcs[0].weight
        total = sum(fc.out_features for fc in fcs)
        self.weight = first.new_empty((total, fcs[0].in_features))
        self.bias = first.new_empty(total)
        start = 0
        for norm, fc in zip(norms, fcs, strict=True):
            rows = fc.out_features
            with torch.no_grad():  # copied in, the layer's own tensors dropped at once
                self.weight[start : start + rows].copy_(fc.weight)
                self.bias[start : start + rows].copy_(cast(torch.Tensor, fc.bias))
            fc.weight = nn.Parameter(self.weight[start : start + rows], requires_grad=False)
            fc.bias = nn.Parameter(self.bias[start : start + rows], requires_grad=False)
            # a plain attribute, not a submodule; a deep copy of the model copies it along
            norm.__dict__["style_projections"] = (self, start, rows // 2)
            start += rows
        self._last: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def __call__(self, start: int, channels: int, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) of the layer whose rows start at ``start`` for style ``s`` [B, S]: [B, C, 1]
        each, as its ``fc(s)`` gives them."""
        last = self._last
        if last is None or last[0] is not s or last[1] != s._version:  # another vector, or changed in place
            last = (s, s._version, torch.addmm(self.bias, s, self.weight.t()).unsqueeze(-1))
            self._last = last  # one assignment: safe to read from other threads
        out = last[2]  # [B, rows, 1]
        return out[:, start : start + channels], out[:, start + channels : start + 2 * channels]


def _affine_snake(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    alpha: torch.Tensor,
    mask: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Snake(x * scale + shift), masked, in ``out_dtype``; scale, shift and alpha are [B or 1, C, 1].

    Snake(y) = y + sin^2(alpha y) / alpha = y + c - c cos(2 alpha y) with c = 1 / (2 alpha), written as
    one new tensor updated in place (five passes over it) instead of y and sin(alpha y) separately.
    """
    two_alpha = 2 * alpha
    t = _cos_(torch.mul(x, two_alpha * scale).add_(two_alpha * shift))
    c = two_alpha.reciprocal()
    t.mul_(-c).add_(shift + c).addcmul_(x, scale)
    if mask is not None:
        t.mul_(mask)
    return t.to(out_dtype)


def adain_affine(
    x: torch.Tensor, norm: AdaIN1d, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdaIN(x) without a mask as (source, scale, shift): AdaIN(x) = source * scale + shift.

    source is x (float32) itself when a one-pass variance is exact enough, else x centred; scale and
    shift are [B, C, 1]. Inside :func:`generate_tiles` the statistics are those of every tile so far.
    """
    x = x.float()  # mixed-dtype element-wise ops are slow in eager mode: convert once
    running = _RUNNING_STATS.get()
    if running is not None:
        source, center, scale, shift = _running_affine(x, norm, s, running)
        return source - center, scale, shift
    gamma, beta = norm.style(s)  # [B, C, 1] each
    mean = x.mean(dim=-1, keepdim=True)
    mean_sq = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1])
    var = mean_sq - mean.square()
    # One pass is exact enough while the mean is at most ~30 standard deviations; past that the
    # subtraction loses digits (on either formula's affine), so centre first as the reference does.
    if x.device.type == "cpu" and not bool((var < 1e-3 * mean_sq).any()):
        scale = (1 + gamma) * torch.rsqrt(var + _EPS)
        return x, scale, beta - mean * scale
    y = x - mean
    return y, (1 + gamma) * torch.rsqrt(y.square().mean(dim=-1, keepdim=True) + _EPS), beta


def _running_affine(
    x: torch.Tensor, norm: AdaIN1d, s: torch.Tensor, running: dict[object, tuple]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdaIN(x) of one tile, float32 ``x``, as (x, center, scale, shift) = (x - center) * scale + shift,
    over the statistics of this tile and every earlier one (``running``, updated here).

    This span's mean and centred sum of squares are merged with the earlier tiles' (Chan et al.) in
    float64: exact enough whatever the ratio of mean to spread. x is returned uncentred, its own mean
    as ``center``: the compiled kernel centres as it reads, so no centred copy is made. On the CPU
    the statistics, their merge and the affine are one kernel call (:func:`native.running_affine`,
    the same arithmetic) instead of about 24 small tensor operations: 9 of a stream's first 140 ms
    went to those.
    """
    gamma, beta = norm.style(s)  # [B, C, 1] each
    if _fusable(None, x, None):  # the statistics, their merge and the affine in one kernel call
        (center, scale, shift), running[id(norm)] = native.running_affine(
            x, gamma, beta, _EPS, running.get(id(norm))
        )
        return x, center, scale, shift
    count = x.shape[-1]
    local = x.mean(dim=-1, keepdim=True)
    m2 = torch.linalg.vector_norm(x - local, dim=-1, keepdim=True).double().square_()
    local64 = mean64 = local.double()
    if id(norm) in running:
        prev_mean, prev_m2, prev_count = running[id(norm)]
        total = prev_count + count
        delta = mean64 - prev_mean
        mean64 = prev_mean + delta * (count / total)
        m2 = prev_m2 + m2 + delta.square() * (prev_count * count / total)
        count = total
    running[id(norm)] = (mean64, m2, count)
    scale = (1 + gamma) * torch.rsqrt((m2 / count).float() + _EPS)
    return x, local, scale, beta - (mean64 - local64).float() * scale


def adain_snake(
    x: torch.Tensor,
    norm: AdaIN1d,
    s: torch.Tensor,
    alpha: torch.Tensor,
    mask: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Snake(AdaIN(x)) = y + sin^2(alpha y) / alpha with y = (1 + g) IN(x) + b, then masked.

    The same function as ``apply_mask(snake(norm(x, s, mask), alpha), mask)``. Without a mask the
    statistics are two reductions (mean and mean square, :func:`adain_affine`), and the affine and
    Snake are one chain of in-place passes (:func:`_affine_snake`) written in ``out_dtype`` (the input
    dtype of the next convolution).
    """
    if exporting():  # traced for ONNX: no data-dependent branch, no in-place ops
        x = x.float()
        if mask is None:  # centred in the graph rather than through an InstanceNormalization node
            gamma, beta = norm.fc(s).unsqueeze(-1).chunk(2, dim=1)
            y = x - x.mean(dim=-1, keepdim=True)
            y = y * ((1 + gamma) * torch.rsqrt(y.square().mean(dim=-1, keepdim=True) + _EPS)) + beta
        else:
            y = norm(x, s, mask)  # the reference AdaIN, traceable as it is
        return apply_mask(snake(y, alpha), mask).to(out_dtype)
    if mask is None:
        return _affine_snake(*adain_affine(x, norm, s), alpha, None, out_dtype)
    gamma, beta = norm.style(s)
    x = x.float()
    valid = mask.sum(dim=-1, keepdim=True).clamp(min=1.0)  # [B, 1, 1]
    mean = (x * mask).sum(dim=-1, keepdim=True) / valid  # cascade sum: a GEMV loses digits here
    y = (x - mean).mul_(mask)
    var = torch.linalg.vector_norm(y, dim=-1, keepdim=True).square_() / valid
    return _affine_snake(y, (1 + gamma) * torch.rsqrt(var + _EPS), beta, alpha, mask, out_dtype)


class FastConv1d(nn.Module):
    """A plain Conv1d (or ConvTranspose1d) run with weights cast to ``dtype``; output in ``dtype``.

    In float32 on a CPU with koel's compiled mixing (AVX2 + FMA), a stride-1 convolution runs in that
    kernel on weights packed once (:func:`koel.model.native.conv`): oneDNN's convolution reorders
    its weights on every call, which for the decoder's 13 MB kernels costs as much as the products
    on a short input. Measured (2-core Zen 3): 0.5-0.9x the time of F.conv1d on the generator's and
    decoder's shapes.

    A 3-tap 'same' convolution with at least ``WINOGRAD_MIN_CHANNELS`` input channels runs as
    Winograd F(4, 3) instead (:func:`koel.model.native.winograd_conv`: half the multiply-adds, its
    packed weights twice the size). Measured against the direct kernel (2-core Zen 3): 1024 -> 1024
    channels over 118 steps 3.5 vs 5.1 ms, 512 over 236 1.5 vs 2.3, 256 over 2320 4.5 vs 5.5; with
    128 channels the transforms' memory traffic then outweighed the saving (11.6 vs 10.5 ms at 4800
    Hz). With float16 weights and the present kernel the generator's six 128-channel ones (4800 Hz)
    in Winograd take the whole engine to 0.953x and 0.948x (bench/speed.py's 30 sentences, AVX2 code
    path of a 2-core AVX512-BF16 CPU, alternating, each engine built first once), first audio the
    same (151.4 vs 152.8 and 172.9 vs 171.8 ms, median of 30).

    A transposed convolution whose kernel is a whole number m of strides S (the generator's
    upsamplers: 20 taps at stride 10, 12 at 6) runs polyphase in the same kernel: output phase r
    (step q S + r before the padding is cut) is an m-tap convolution of the input with taps
    r, r + S, ..., so all S phases are one product with S C_out rows, interleaved by one copy.
    oneDNN took 21-35 GMAC/s on these shapes.
    """

    WINOGRAD_MIN_CHANNELS = 128

    weight: torch.Tensor  # [C_out, C_in / groups, k] (transposed: [C_in, C_out, k]), or packed
    bias: torch.Tensor | None
    phase_bias: torch.Tensor | None  # a transposed convolution's bias, repeated for each output phase

    def __init__(
        self,
        conv: nn.Conv1d | nn.ConvTranspose1d,
        dtype: torch.dtype,
        compiled: bool = True,
        *,
        half_weights: bool = False,
    ) -> None:
        super().__init__()
        self.transposed = isinstance(conv, nn.ConvTranspose1d)
        self.stride, self.padding = int(conv.stride[0]), int(conv.padding[0])  # type: ignore[arg-type]
        self.dilation, self.groups = int(conv.dilation[0]), conv.groups
        self.output_padding = int(conv.output_padding[0]) if self.transposed else 0
        self.out_channels, self.taps = conv.out_channels, int(conv.kernel_size[0])
        self.dtype = dtype
        self.packed = (
            compiled
            and self.groups == 1
            and (
                self.taps % self.stride == 0 and self.output_padding == 0 and self.dilation == 1
                if self.transposed
                else self.stride == 1
            )
            and dtype == torch.float32
            and conv.weight.device.type == "cpu"
            and native.mix_available()
        )
        self.winograd = (
            self.packed
            and not self.transposed
            and self.taps == 3
            and self.padding == self.dilation
            and conv.in_channels >= self.WINOGRAD_MIN_CHANNELS
        )
        weight = conv.weight.detach()
        bias = None if conv.bias is None else conv.bias.detach().to(dtype).clone()
        phase_bias = None
        half = self.packed and half_weights
        if self.winograd:
            weight = native.pack_winograd_weights(weight, half)
        elif self.packed and self.transposed:
            # [C_in, C_out, m S] -> phase r, output o, input i, tap t = weight[i, o, (m - 1 - t) S + r]
            c_in, s, m = weight.shape[0], self.stride, self.taps // self.stride
            phases = weight.reshape(c_in, self.out_channels, m, s).permute(3, 1, 0, 2).flip(-1)
            weight = native.pack_conv_weights(phases.reshape(s * self.out_channels, c_in, m), half)
            phase_bias = None if bias is None else bias.repeat(s)
        elif self.packed:
            weight = native.pack_conv_weights(weight, half)
        else:
            weight = weight.to(dtype).clone()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.register_buffer("phase_bias", phase_bias, persistent=False)

    def _plain_weight(self) -> torch.Tensor:
        if self.winograd:
            return native.unpack_winograd_weights(self.weight, self.out_channels)
        if not self.packed:
            return self.weight
        if self.transposed:
            s, m = self.stride, self.taps // self.stride
            rows = native.unpack_mix_weights(self.weight, s * self.out_channels)[0]  # [S C_out, m C_in]
            phases = rows.reshape(s, self.out_channels, m, -1).flip(2)  # [r, o, j, i]: tap j S + r
            return phases.permute(3, 1, 2, 0).reshape(-1, self.out_channels, self.taps)
        taps_by_channel = native.unpack_mix_weights(self.weight, self.out_channels)[0]
        return taps_by_channel.reshape(self.out_channels, self.taps, -1).transpose(1, 2)

    def _compiled(self, x: torch.Tensor) -> bool:
        return self.packed and x.device.type == "cpu" and not exporting()

    def _run(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if self.transposed:  # every phase in one product, then interleaved and the padding cut
            s, m, c_out = self.stride, self.taps // self.stride, self.out_channels
            phases = native.conv(x.float(), self.weight, s * c_out, m, 1, m - 1, self.phase_bias)
            batch, _, steps = phases.shape
            out = phases.view(batch, s, c_out, steps).permute(0, 2, 3, 1).reshape(batch, c_out, steps * s)
            length = (x.shape[-1] - 1) * s - 2 * self.padding + self.taps
            return out[..., self.padding : self.padding + length]
        if self.winograd:
            return native.winograd_conv(
                x.float(), self.weight, self.out_channels, self.dilation, self.bias, residual
            )
        return native.conv(
            x.float(),
            self.weight,
            self.out_channels,
            self.taps,
            self.dilation,
            self.padding,
            self.bias,
            out=residual,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled(x):
            return self._run(x, None)
        x = x.to(self.dtype)
        weight = self._plain_weight().to(x.device)
        if self.transposed:
            return F.conv_transpose1d(
                x,
                weight,
                self.bias,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
            )
        return F.conv1d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def adds_into(self, x: torch.Tensor, residual: torch.Tensor) -> bool:
        """Whether :meth:`add_into` can add conv(x) into (a contiguous copy of) ``residual``."""
        return (
            self._compiled(x)
            and not self.transposed
            and residual.dtype == torch.float32
            and residual.device.type == "cpu"
        )

    def add_into(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual += conv(x), in place, in the compiled kernel (see :meth:`adds_into`)."""
        return self._run(x, residual)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(q, scale, levels) when every row of ``weight`` [out, in] is a whole multiple of its own scale,
    ``weight[o] == q[o] * scale[o]`` with int8 ``q`` in ``[-levels, levels]`` (levels 64 or 127); else None.

    The official int8 export stores every nn.Linear this way (per output channel, zero point 0, 7-bit
    values: onnxruntime's ``reduce_range``), so the weights dequantised from it are exact int8 again.
    """
    w = weight.detach().double().cpu()
    if w.dim() != 2 or w.numel() == 0:
        return None
    peak = w.abs().amax(dim=1)
    for levels in (64, 127):
        scale = torch.where(peak > 0, peak / levels, torch.ones_like(peak))
        q = w / scale[:, None]
        if float((q - q.round()).abs().max()) <= 1e-2:
            return q.round().to(torch.int8), scale, levels
    return None


def int8_linear_available() -> bool:
    """Whether PyTorch's int8 dynamic linear (FBGEMM, x86) runs here."""
    return torch.backends.quantized.engine in ("x86", "fbgemm") and hasattr(
        torch.ops.quantized, "linear_dynamic"
    )


def _pack_int8(linear: nn.Linear) -> tuple[object, bool] | None:
    """PyTorch's packed int8 weights for ``linear`` (and its ``reduce_range``) where they hold the
    layer exactly (:func:`int8_rows`) and the int8 product runs here; else None."""
    rows = int8_rows(linear.weight) if int8_linear_available() else None
    if rows is None:
        return None
    q, scale, levels = rows
    bias = None if linear.bias is None else linear.bias.detach().float().cpu()
    try:
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch 2.13, still there
            warnings.simplefilter("ignore")
            weight = torch.quantize_per_channel(
                q.float() * scale.float()[:, None],
                scale,
                torch.zeros_like(q[:, 0], dtype=torch.long),
                0,
                torch.qint8,
            )
            packed = torch.ops.quantized.linear_prepack(weight, bias)
    except (RuntimeError, AttributeError, NotImplementedError) as exc:  # a build without FBGEMM
        log.info("int8 linear unavailable (%s); float32 products", exc)
        return None
    # 7-bit weights leave headroom for 8-bit activations in AVX2's paired u8 x s8 products; full
    # int8 weights need 7-bit activations not to saturate them
    return packed, levels > 64


class FastLinear(nn.Linear):
    """nn.Linear (same parameters) whose float32 CPU product runs in koel's kernel on weights packed
    once (:func:`koel.model.native.linear`): for the few dozen tokens of a sentence, MKL's GEMM
    spends much of each call packing the weights again (PL-BERT's 768 -> 2048 layer over 50 tokens ran
    at 24 GMAC/s). Measured (2-core Zen 3), 12-100 tokens: 0.3-0.95x F.linear's time; from about
    200 tokens MKL is as fast or faster, so longer inputs go to it. Elsewhere (autograd, other devices
    and dtypes, ONNX tracing) it is nn.Linear.

    ``int8=True`` runs the product as the official int8 export does, where the weights are exact int8
    per output channel (:func:`int8_rows`: the weights dequantised from that export are): int8
    weights, activations quantised per call to uint8 (per tensor, asymmetric), int32 accumulation, in
    PyTorch's FBGEMM kernel. PL-BERT over a 47-token first chunk: 0.58x the float32 kernel's time.
    """

    packed_weight: torch.Tensor
    compiled: bool
    int8: tuple[object, bool] | None  # PyTorch's packed int8 weights and their reduce_range
    max_rows = 128  # longer inputs: MKL

    @classmethod
    def adopt(cls, linear: nn.Linear, int8: bool = False) -> FastLinear:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new.int8 = _pack_int8(linear) if int8 and linear.weight.device.type == "cpu" else None
        # the float32 kernel's weights only where the int8 product does not take every input
        packed = native.pack_linear_weights(linear.weight.detach()) if new.int8 is None else torch.empty(0)
        new.register_buffer("packed_weight", packed, persistent=False)
        new.compiled = native.mix_available() and new.int8 is None
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and not exporting()
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
        ):
            if self.int8 is not None:
                packed, reduce_range = self.int8
                return torch.ops.quantized.linear_dynamic(x.contiguous(), packed, reduce_range)
            if self.compiled and x.numel() <= self.max_rows * self.in_features:
                return native.linear(x, self.packed_weight, self.out_features, self.bias)
        return F.linear(x, self.weight, self.bias)


class FastLSTM(nn.LSTM):
    """nn.LSTM (same parameters) whose one-sequence, one-layer bidirectional float32 CPU inference runs
    in koel's kernel (:func:`koel.model.native.lstm`): the input projections of all steps as one
    product on weights packed once, then the two directions' recurrences at the same time, one per
    thread. PyTorch runs the directions one after the other, each step a small product split between
    the threads. Measured (2-core Zen 3, 256 units): 47 steps 1.3 ms against 4.7 for the recurrence,
    118 steps 2.3 against 6.9. Everything else (packed sequences, batches, a given initial state,
    autograd, other devices, ONNX tracing) is nn.LSTM's."""

    packed_ih: torch.Tensor  # [ceil(8H / 16), I, 16]: both directions' W_ih, kernel gate order
    packed_bias: torch.Tensor  # [8H]: b_ih + b_hh in the same order
    packed_hh: torch.Tensor  # native.pack_lstm_weights
    compiled: bool

    @staticmethod
    def fits(lstm: nn.LSTM) -> bool:
        """Whether the kernel can run this LSTM (one bidirectional batch-first layer with biases)."""
        return (
            type(lstm) is nn.LSTM
            and lstm.num_layers == 1
            and lstm.bidirectional
            and lstm.batch_first
            and lstm.bias
            and lstm.proj_size == 0
            and lstm.hidden_size % 16 == 0
        )

    @classmethod
    def adopt(cls, lstm: nn.LSTM) -> FastLSTM:
        if not cls.fits(lstm):
            raise ValueError(f"FastLSTM takes one bidirectional batch-first layer with biases, got {lstm}")
        new = cls.__new__(cls)
        new.__dict__.update(lstm.__dict__)  # the same parameters, under the same names
        new._buffers = dict(lstm._buffers)
        p = {name: w.detach() for name, w in lstm.named_parameters()}
        order = native.lstm_gate_order(lstm.hidden_size)
        w_ih = torch.cat([p["weight_ih_l0"][order], p["weight_ih_l0_reverse"][order]])
        bias = torch.cat(
            [
                (p["bias_ih_l0"] + p["bias_hh_l0"])[order],
                (p["bias_ih_l0_reverse"] + p["bias_hh_l0_reverse"])[order],
            ]
        )
        new.register_buffer("packed_ih", native.pack_linear_weights(w_ih), persistent=False)
        new.register_buffer("packed_bias", bias.float().contiguous(), persistent=False)
        packed_hh = native.pack_lstm_weights((p["weight_hh_l0"], p["weight_hh_l0_reverse"]))
        new.register_buffer("packed_hh", packed_hh, persistent=False)
        new.compiled = native.mix_available()
        return new

    def _projections(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, I] -> [T, 2, 4H]: x W_ih^T + b_ih + b_hh per direction, in the kernel's gate order."""
        steps, hidden = x.shape[0], self.hidden_size
        if steps <= FastLinear.max_rows:
            return native.linear(x, self.packed_ih, 8 * hidden, self.packed_bias).view(steps, 2, 4 * hidden)
        out = torch.empty(steps, 2, hidden // 16, 4, 16)  # MKL on the original weights, then reordered
        for d, suffix in enumerate(("", "_reverse")):
            w, b_ih, b_hh = (
                getattr(self, f"{name}_l0{suffix}") for name in ("weight_ih", "bias_ih", "bias_hh")
            )
            out[:, d] = F.linear(x, w, b_ih + b_hh).view(steps, 4, hidden // 16, 16).transpose(1, 2)
        return out.view(steps, 2, 4 * hidden)

    def forward(  # type: ignore[override]
        self,
        input: torch.Tensor | nn.utils.rnn.PackedSequence,
        hx: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor | nn.utils.rnn.PackedSequence, tuple[torch.Tensor, torch.Tensor]]:
        if (
            self.compiled
            and hx is None
            and isinstance(input, torch.Tensor)
            and input.dim() == 3
            and input.shape[0] == 1
            and input.shape[1] > 0
            and input.device.type == "cpu"
            and input.dtype == torch.float32
            and not exporting()
            and not (torch.is_grad_enabled() and (input.requires_grad or self.weight_hh_l0.requires_grad))
        ):
            out, state = native.lstm(self._projections(input[0]), self.packed_hh)
            return out.unsqueeze(0), (state[:, 0].unsqueeze(1), state[:, 1].unsqueeze(1))
        return super().forward(input, hx)


class BlockDFTConv1d(nn.Module):
    """Overlap-save convolution: DFT -> per-frequency channel mixing -> inverse DFT.

    A k-tap conv costs k * C_in * C_out multiply-adds per output step. Cut into blocks of n = ``block``
    samples it becomes one C_out x C_in product for each of the two real bins (DC and Nyquist) and one
    complex product for each of the n / 2 - 1 others: (2 n - 2) / (n - k + 1) * C_in * C_out per step
    (2.15 for k = 11 in blocks of 128, 2.3 in 64, 2.8 in 32, instead of 11). Exact up to ``dtype`` rounding.

    The transforms run in koel's compiled kernel (:mod:`koel.model.native`: FFTs on 8 or 16 blocks
    at a time, one per SIMD lane, straight from and to the signal, float32 output) on the CPU where
    it is built, with spectra in the products' dtype (bfloat16 or float32); otherwise as two small
    matrix products per call (any device and dtype). In float32 the per-bin channel products run in
    the same kernel too, on weights packed once (:func:`koel.model.native.mix`), where a general GEMM
    would repack 8-16 MB of weights on every call: the products of a 3 s utterance took 0.79x
    torch.bmm's time, of a 0.7 s first stream tile 0.63x (2-core Zen 3). There each complex bin is
    three real products, not four (:func:`koel.model.native.complex_mix`): 0.6-0.75x the time of the
    four for 256-512 channels, about the same for 128, a quarter less weight memory.

    A kernel dilated by d is run polyphase: output steps r, r + d, r + 2d, ... read only inputs
    r, r + d, ... through the undilated kernel, so the d phases are d more columns of the same short
    transform (blocks sized for k taps, not for the dilated span of d (k - 1) + 1).
    """

    mix_real: torch.Tensor  # [2, C_out, C_in]: the DC and Nyquist bins
    mix_complex: torch.Tensor  # [n/2 - 1, 2 C_out, 2 C_in]: [[A, -B], [B, A]] per other bin
    # (when ``packed``, the compiled float32 mixing: mix_real in native.pack_mix_weights' order,
    # mix_complex as native.pack_complex_mix_weights(A, B): 3 real products per bin, not 4)
    analysis: torch.Tensor  # [n, n]: block -> spectrum rows (native.spectrum_rows order)
    synthesis: torch.Tensor  # [n, step]: spectrum rows -> the block's valid output steps
    bias: torch.Tensor | None  # [C_out], float32

    def __init__(
        self,
        conv: nn.Conv1d,
        dtype: torch.dtype,
        block: int,
        compiled: bool = True,
        *,
        half_weights: bool = False,
    ) -> None:
        super().__init__()
        c_out, _, k = conv.weight.shape
        d = int(conv.dilation[0])
        span = d * (k - 1) + 1
        if conv.stride[0] != 1 or conv.groups != 1 or conv.padding[0] != (span - 1) // 2 or span % 2 == 0:
            raise ValueError(f"BlockDFTConv1d needs a stride-1 'same' convolution, got {conv}")
        if block <= k or block < 4 or block & (block - 1):
            raise ValueError(f"block ({block}) must be a power of two longer than the kernel ({k} taps)")
        self.c_out, self.taps, self.dilation = c_out, k, d
        #: the same convolution in longer blocks, for inputs of at least :data:`LONG_INPUT` steps
        self.long: BlockDFTConv1d | None = None
        self.block, self.step, self.nyquist = block, block - k + 1, block // 2
        device = conv.weight.device
        self.native = (
            compiled
            and dtype in (torch.bfloat16, torch.float32)
            and device.type == "cpu"
            and block in native.BLOCK_SIZES
            and native.available()
        )
        self.packed = self.native and dtype == torch.float32 and native.mix_available()
        w = conv.weight.detach().double().cpu()
        # torch's conv is a correlation: Y_f = conj(W_f) X_f per bin; [[A, -B], [B, A]] maps (Re, Im) -> (Re, Im).
        spec = torch.fft.rfft(w, n=block).conj().permute(2, 0, 1)  # [bins, C_out, C_in]
        a, b = spec.real[1 : self.nyquist], spec.imag[1 : self.nyquist]
        rows = native.spectrum_rows(block)
        f = torch.tensor([r[0] for r in rows], dtype=torch.float64)[:, None]
        imaginary = torch.tensor([r[1] == 1 for r in rows])[:, None]
        t = torch.arange(block, dtype=torch.float64)
        angle = 2 * torch.pi * f * t / block  # [n rows, block]
        analysis = torch.where(imaginary, -torch.sin(angle), torch.cos(angle))
        # one-sided spectrum: DC and Nyquist count once, the other bins twice
        weight = torch.where((f == 0) | (f == self.nyquist), 1.0 / block, 2.0 / block)
        synthesis = weight * analysis[:, : self.step]
        mix_real = spec.real[[0, self.nyquist]]
        if self.packed:  # the complex bins as A, -(A + B), B - A: three real products instead of four
            mix_real = native.pack_mix_weights(mix_real, half_weights)
            mix_complex = native.pack_complex_mix_weights(a, b, half_weights)
        else:
            mix_complex = torch.cat([torch.cat([a, -b], dim=2), torch.cat([b, a], dim=2)], dim=1)
            mix_real, mix_complex = mix_real.to(device, dtype), mix_complex.to(device, dtype)
        self.register_buffer("mix_real", mix_real.contiguous(), persistent=False)
        self.register_buffer("mix_complex", mix_complex.contiguous(), persistent=False)
        self.register_buffer("analysis", analysis.to(device, dtype).contiguous(), persistent=False)
        self.register_buffer("synthesis", synthesis.to(device, dtype).contiguous(), persistent=False)
        bias = None if conv.bias is None else conv.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)

    def _blocks(self, length: int) -> int:
        """Blocks of the longest polyphase phase for a signal of ``length`` steps."""
        per_phase = -(-length // self.dilation)
        return -(-per_phase // self.step)

    def _mix(self, spectra: torch.Tensor) -> torch.Tensor:
        """[n, C_in, columns] -> [n, C_out, columns]: the per-bin channel products, in place in one tensor."""
        columns = spectra.shape[-1]
        out = spectra.new_empty((self.block, self.c_out, columns))
        pairs = self.nyquist - 1
        if self.packed:
            native.mix(spectra[:2], self.mix_real, self.c_out, out=out[:2])
            native.complex_mix(
                spectra[2:].view(pairs, 2, -1, columns),
                self.mix_complex,
                self.c_out,
                out=out[2:].view(pairs, 2, self.c_out, columns),
            )
            return out
        torch.bmm(self.mix_real, spectra[:2], out=out[:2])
        torch.bmm(
            self.mix_complex, spectra[2:].view(pairs, -1, columns), out=out[2:].view(pairs, -1, columns)
        )
        return out

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mix_real, mix_complex) as [2, C_out, C_in] and [n/2 - 1, 2 C_out, 2 C_in], packed or not."""
        if not self.packed:
            return self.mix_real, self.mix_complex
        a, b = native.unpack_complex_mix_weights(self.mix_complex, self.c_out)
        mix_complex = torch.cat([torch.cat([a, -b], dim=2), torch.cat([b, a], dim=2)], dim=1)
        return native.unpack_mix_weights(self.mix_real, self.c_out), mix_complex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, L] -> [B, C_out, L], float32 from the compiled kernel, else in ``dtype``."""
        if exporting():
            return self._traceable(x)
        batch, c_in, length = x.shape
        d, k, step = self.dilation, self.taps, self.step
        n_blocks = self._blocks(length)
        left = d * (k - 1) // 2
        if self.native and x.device.type == "cpu":
            return self.fused(x)
        total = d * (n_blocks * step + k - 1)
        # One name for every stage, so each intermediate (1.2-1.5x the input) is freed as soon as the
        # next exists: at most two are alive, which keeps the generator's memory per second of audio low.
        t = F.pad(x.to(self.analysis.dtype), (left, total - length - left))
        # rows ordered (channel, item, phase, block): block j of phase r holds inputs r + d (j step + i)
        t = t.as_strided((c_in, batch, d, n_blocks, self.block), (total, c_in * total, 1, d * step, d))
        columns = batch * d * n_blocks
        t = self._mix((self.analysis @ t.reshape(-1, self.block).t()).view(self.block, c_in, columns))
        if self.bias is not None:
            t[0].add_((self.bias * self.block).to(t.dtype)[:, None])  # at DC, whose synthesis weight is 1/n
        t = t.view(self.block, -1).t() @ self.synthesis  # [C_out B d n, step]
        # interleave the phases (output r + d m comes from phase r, step m); a view when d = 1
        t = t.view(self.c_out, batch, d, n_blocks * step).transpose(2, 3)
        return t.reshape(self.c_out, batch, d * n_blocks * step)[..., :length].transpose(0, 1)

    def fused(
        self,
        x: torch.Tensor,
        activation: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """With the compiled kernel only: conv(Snake((x - center) * scale + shift)) for ``activation =
        (center, scale, shift, alpha)`` (else conv(x)), float32; added in place into ``residual`` when
        given.

        The activation is applied as the kernel reads each block, so the activated signal is never
        stored; the output goes straight into the residual stream.
        """
        if self.long is not None and x.shape[-1] >= LONG_INPUT:
            return self.long.fused(x, activation, residual)
        batch, _, length = x.shape
        d, step = self.dilation, self.step
        n_blocks = self._blocks(length)
        left = d * (self.taps - 1) // 2
        spectra = native.analysis(x, self.block, step, d, n_blocks, left, activation, self.analysis.dtype)
        spectra = self._mix(spectra)
        return native.synthesis(spectra, batch, length, step, d, n_blocks, self.bias, out=residual)

    def _traceable(self, x: torch.Tensor) -> torch.Tensor:
        """The same computation for ONNX tracing (batch 1): block count from tensor ops, gathered blocks."""
        d, k, step = self.dilation, self.taps, self.step
        length = torch._shape_as_tensor(x)[2]
        per_phase = torch.div(length + d - 1, d, rounding_mode="floor")
        n_blocks = torch.div(per_phase + step - 1, step, rounding_mode="floor")
        left = d * (k - 1) // 2
        padded = F.pad(x, (left, d * (step + k) - left))  # enough for any length
        starts = torch.arange(n_blocks)[:, None] * step  # type: ignore[call-overload]
        positions = (starts + torch.arange(self.block)[None, :]) * d  # [n, block]
        index = torch.arange(d)[:, None, None] + positions[None]  # [d, n, block]
        blocks = padded[0][:, index].reshape(-1, self.block)  # [C_in d n, block]
        mix_real, mix_complex = self._weights()
        spectra = (self.analysis @ blocks.t()).reshape(self.block, mix_real.shape[2], -1)
        pairs = self.nyquist - 1
        complex_part = torch.bmm(mix_complex, spectra[2:].reshape(pairs, 2 * spectra.shape[1], -1))
        mixed = torch.cat([torch.bmm(mix_real, spectra[:2]), complex_part.reshape(2 * pairs, self.c_out, -1)])
        out = (mixed.reshape(self.block, -1).t() @ self.synthesis).reshape(self.c_out, d, -1).transpose(1, 2)
        out = out.reshape(1, self.c_out, -1)[..., : x.shape[2]]
        return out if self.bias is None else out + self.bias.to(out.dtype)[:, None]


#: Mixing weights one block-DFT convolution may hold, in values (4 bytes each in fp32, 2 in bf16).
SPECTRUM_BUDGET = 5 << 20
#: Input steps from which a compiled float32 block-DFT convolution runs its blocks twice as long
#: (:attr:`BlockDFTConv1d.long`, see :func:`plan_conv`), and the budget of those longer blocks.
LONG_INPUT = 2000
LONG_SPECTRUM_BUDGET = 17 << 19


def plan_conv(
    conv: nn.Conv1d,
    dtype: torch.dtype,
    max_spectrum_values: int = SPECTRUM_BUDGET,
    compiled: bool = True,
    *,
    half_weights: bool = False,
) -> nn.Module:
    """The faster of a direct and a block-DFT convolution for this shape (measured on x86, fp32/bf16).

    Block DFT wins for kernels of 7 taps and more, dilated or not (dilated ones run polyphase). With
    the compiled transforms the block is the longest of 128, 64 and 32 samples whose mixing weights
    stay within ``max_spectrum_values``: a longer block costs fewer products per output step (for 11
    taps 2.15x C_in C_out in blocks of 128, 2.33x in 64, 2.8x in 32) and fewer transform samples per
    output, for weights twice the size. With PyTorch's matrix-product transforms (no compiler, another
    device, or ``compiled=False`` for an ONNX graph), whose cost grows with the block, the power of
    two at or above 2.5x the kernel, within 2 bytes per budgeted value. Weights over the budget stay
    direct to bound memory. On the 2-core AVX2 CPU of bench/speed.py, fp32, 5 s of audio: an 11-tap
    256-channel convolution took 17 ms in blocks of 32 (1.2 ms analysis, 14.4 ms mixing, 1.1 ms
    synthesis) against 44-53 ms direct; at 128 channels, blocks of 64, 27 ms against 110 ms. The
    generator's 128-channel convolutions (the 4800 Hz stage) in blocks of 128 instead of 64 take
    about 3.5% off the whole engine's time in fp32 (bench/speed.py's 30 sentences, 2-core
    AVX512-BF16 CPU, kernel built for AVX2, the two engines alternating: 0.931-0.938x with the
    64-block engine built first, 1.003-1.010x the other way round, as the engine built second ran
    about 3% faster), for 113 MB more weights; in bf16 only 0.962x was measured, with the 64-block
    engine built first, so about even. The 256-channel ones (800 Hz) stay in blocks of 32: in 64
    (float16-stored weights, 30 sentences, each engine built first once) they took the whole engine
    to 0.956-0.962x in fp32 (kernel built for AVX2) and 0.975-0.979x in bf16, but a stream's first
    audio 5% (fp32) and 9% (bf16) later: on a first tile's 400-sample input the 64-sample blocks
    took 0.95-1.45x the time of 32 (fp32), 1.3-1.4x (bf16), and were no faster below 1500 samples.
    So in float32 (compiled products) such a convolution also holds the same weights in blocks twice
    as long, within :data:`LONG_SPECTRUM_BUDGET`, for inputs of :data:`LONG_INPUT` steps and more
    (a whole utterance of 2.5 s or more, the fixed-width tiles of a long one): 0.83-0.98x the time
    from 2400 steps on, alone; 215 MB more weights (float16).
    """
    k = conv.kernel_size[0]
    if k >= 7:
        c_out, c_in, _ = conv.weight.shape
        compiled = compiled and conv.weight.device.type == "cpu" and native.available()
        sizes = [128, 64, 32] if compiled else [1 << max(4, math.ceil(math.log2(2.5 * k)))]
        size = 1.0 if compiled else torch.empty(0, dtype=dtype).element_size() / 2
        for block in sizes:
            if block > k and (2 * block - 2) * c_out * c_in * size <= max_spectrum_values:
                planned = BlockDFTConv1d(conv, dtype, block, compiled, half_weights=half_weights)
                longer = 2 * block
                if (
                    planned.packed
                    and longer in sizes
                    and (2 * longer - 2) * c_out * c_in <= LONG_SPECTRUM_BUDGET
                ):
                    planned.long = BlockDFTConv1d(conv, dtype, longer, compiled, half_weights=half_weights)
                return planned
    return FastConv1d(conv, dtype, compiled, half_weights=half_weights)


def _require_plain(*convs: nn.Module) -> None:
    if any(parametrize.is_parametrized(c) for c in convs):
        raise ValueError("fold weight norm first (KokoroModel.fold_weight_norm) before using the fast path")


class FastAdaINResBlock1(AdaINResBlock1):
    """AdaINResBlock1 with the fused activation and planned convolutions (same parameters)."""

    def __init__(
        self,
        block: AdaINResBlock1,
        dtype: torch.dtype,
        block_dft: bool = True,
        compiled: bool = True,
        *,
        half_weights: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        self.convs1, self.convs2 = block.convs1, block.convs2
        self.adain1, self.adain2 = block.adain1, block.adain2
        self.alpha1, self.alpha2 = block.alpha1, block.alpha2
        _require_plain(*self.convs1, *self.convs2)
        budget = SPECTRUM_BUDGET if block_dft else 0
        self.fast1 = nn.ModuleList(
            [
                plan_conv(cast(nn.Conv1d, c), dtype, budget, compiled, half_weights=half_weights)
                for c in self.convs1
            ]
        )
        self.fast2 = nn.ModuleList(
            [
                plan_conv(cast(nn.Conv1d, c), dtype, budget, compiled, half_weights=half_weights)
                for c in self.convs2
            ]
        )
        self.dtype = dtype

    def forward(self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.float()
        owned = False  # x is the caller's tensor (shared by parallel blocks) until the first add
        for conv1, conv2, norm1, norm2, alpha1, alpha2 in zip(
            self.fast1, self.fast2, self.adain1, self.adain2, self.alpha1, self.alpha2, strict=True
        ):
            if _fusable(conv1, x, mask):  # the activation applied inside the block-DFT kernel
                source, center, scale, shift = _kernel_affine(x, norm1, s, self.dtype)
                t = cast(BlockDFTConv1d, conv1).fused(source, (center, scale, shift, alpha1))
            else:
                t = conv1(self._activated(x, norm1, s, alpha1, mask))
            if _fusable(conv2, t, mask):  # ... and the residual add too
                source, center, scale, shift = _kernel_affine(t, norm2, s, self.dtype)
                residual = x if owned else x.clone(memory_format=torch.contiguous_format)
                x = cast(BlockDFTConv1d, conv2).fused(source, (center, scale, shift, alpha2), residual)
            else:
                t = self._activated(t, norm2, s, alpha2, mask)
                if isinstance(conv2, FastConv1d) and conv2.adds_into(t, x):  # the add in the kernel
                    x = conv2.add_into(t, x if owned else x.clone(memory_format=torch.contiguous_format))
                else:
                    x = _add_residual(x, conv2(t), owned)
            owned = True
        return x

    def _activated(
        self, x: torch.Tensor, norm: AdaIN1d, s: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Snake(AdaIN(x)) as the input of a direct convolution: in one compiled pass where it can be."""
        if _fusable(None, x, mask):
            source, center, scale, shift = _kernel_affine(x, norm, s, self.dtype)
            return native.snake(source, (center, scale, shift, alpha), self.dtype)
        return adain_snake(x, norm, s, alpha, mask, self.dtype)


def _add_residual(x: torch.Tensor, t: torch.Tensor, in_place: bool) -> torch.Tensor:
    """x + t into the fp32 residual stream (into x itself when ``in_place``). A bf16 t is added by the
    compiled kernel in one pass where it can; PyTorch converts it first (its in-place add of a bf16
    tensor to an fp32 one takes a mixed-dtype path about 20x slower than converting, then adding)."""
    if (
        t.dtype == torch.bfloat16
        and x.dtype == torch.float32
        and _fusable(None, x, None)
        and x.is_contiguous()
    ):
        return native.add_bf16(x, t, out=x if in_place else None)
    return x.add_(t.float()) if in_place else x + t.float()


def _kernel_affine(
    x: torch.Tensor, norm: AdaIN1d, s: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdaIN(x) without a mask as (source, center, scale, shift) = (source - center) * scale + shift,
    for the compiled kernel. With bf16 convolutions the statistics come from the kernel's centred row
    passes, the centring left to the kernel. In fp32 they are PyTorch's, as in the masked (batched) and
    reference paths (same cost: two passes): a channel that is constant in time (an unvoiced source)
    is normalised by dividing the rounding of x - mean by sqrt(eps), so only the same arithmetic
    gives the same result there."""
    running = _RUNNING_STATS.get()
    if running is not None:  # tiles: merged over the tiles so far
        return _running_affine(x.float(), norm, s, running)
    if dtype == torch.float32:
        source, scale, shift = adain_affine(x, norm, s)
        return source, torch.zeros_like(scale), scale, shift
    gamma, beta = norm.style(s)
    if x.dtype != torch.bfloat16:  # the kernel reads bf16 (a direct convolution's output) as it is
        x = x.float()
    mean, var = native.row_stats(x)
    return x, mean, (1 + gamma) * torch.rsqrt(var + _EPS), beta


def _fusable(conv: nn.Module | None, x: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether the compiled kernel can take this activation: into ``conv``'s transforms (a block-DFT
    convolution), or as a pass of its own (``conv`` None)."""
    if mask is not None or x.device.type != "cpu" or exporting() or not native.available():
        return False
    return conv is None or (isinstance(conv, BlockDFTConv1d) and conv.native)


class FastAdainResBlk1d(AdainResBlk1d):
    """AdainResBlk1d (decoder, F0 and energy blocks) with its convolutions in ``dtype``."""

    def __init__(
        self, block: AdainResBlk1d, dtype: torch.dtype, compiled: bool = True, *, half_weights: bool = False
    ) -> None:
        nn.Module.__init__(self)
        self.upsample, self.learned_sc, self.dropout = block.upsample, block.learned_sc, block.dropout
        self.conv1, self.conv2, self.norm1, self.norm2 = block.conv1, block.conv2, block.norm1, block.norm2
        _require_plain(self.conv1, self.conv2)
        self.fast1, self.fast2 = (
            FastConv1d(self.conv1, dtype, compiled, half_weights=half_weights),
            FastConv1d(self.conv2, dtype, compiled, half_weights=half_weights),
        )
        if self.learned_sc:
            self.conv1x1 = block.conv1x1
            _require_plain(self.conv1x1)
            self.fast_sc = FastConv1d(self.conv1x1, dtype, compiled, half_weights=half_weights)
        if self.upsample:
            self.pool = block.pool

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.fast_sc(x).float() if self.learned_sc else x

    def _residual(
        self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None, out_mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = F.leaky_relu(_norm(self.norm1, x, s, mask), 0.2)
        if self.upsample:
            x = self.pool(x)
            x = x if out_mask is None else x * out_mask
        x = F.leaky_relu(_norm(self.norm2, self.fast1(x).float(), s, out_mask), 0.2)
        return self.fast2(x).float()


def _norm(norm: AdaIN1d, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``norm(x, s, mask)``, over the running statistics of a tiled stream where one is running
    (the decoder's head window, :func:`stream_tiles`)."""
    if mask is None and _RUNNING_STATS.get() is not None and not exporting():
        source, scale, shift = adain_affine(x, norm, s)
        return source * scale + shift
    return norm(x, s, mask)


def _adopted(  # type: ignore[no-untyped-def]
    cls, conv: nn.Conv1d | nn.ConvTranspose1d, dtype: torch.dtype, compiled: bool, half_weights: bool, **extra
):
    """A ``cls`` (Conv1d or ConvTranspose1d subclass) holding ``conv``'s own parameters, computed by a
    :class:`FastConv1d` of it (child ``fast``)."""
    _require_plain(conv)
    new = cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        device="meta",
        **extra,
    )
    new.weight, new.bias = conv.weight, conv.bias
    new.fast = FastConv1d(conv, dtype, compiled, half_weights=half_weights)
    return new


class FastConvTranspose1d(nn.ConvTranspose1d):
    """A plain ConvTranspose1d computed in ``dtype`` with an fp32 result (same parameters)."""

    @classmethod
    def adopt(
        cls,
        conv: nn.ConvTranspose1d,
        dtype: torch.dtype,
        compiled: bool = True,
        *,
        half_weights: bool = False,
    ) -> FastConvTranspose1d:
        return cast(
            FastConvTranspose1d,
            _adopted(cls, conv, dtype, compiled, half_weights, output_padding=conv.output_padding),
        )

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return cast(FastConv1d, self.fast)(x).float()


class AdoptedConv1d(nn.Conv1d):
    """A plain Conv1d computed by :class:`FastConv1d`, float32 result; it keeps the original
    parameters, so state dicts and weight fingerprints see the same module as before."""

    @classmethod
    def adopt(
        cls, conv: nn.Conv1d, dtype: torch.dtype, compiled: bool = True, *, half_weights: bool = False
    ) -> AdoptedConv1d:
        return cast(AdoptedConv1d, _adopted(cls, conv, dtype, compiled, half_weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(FastConv1d, self.fast)(x).float()


class BranchPool:
    """Worker threads that each run torch single-threaded, for the generator's independent branches.

    Intra-op parallelism splits every op across the cores and meets at a barrier after each one;
    on two or three cores (and worse on a busy machine) those barriers cost more than they save.
    The generator is not one chain: each stage has a noise branch that needs only F0, and three
    resblocks that read the same input. Running those as whole single-threaded tasks keeps every
    core busy without barriers.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="koel-branch", initializer=_one_thread)
        threads = torch.get_num_threads()
        barrier = threading.Barrier(workers)
        for f in [self._pool.submit(barrier.wait) for _ in range(workers)]:  # start them all now
            f.result()
        torch.set_num_threads(threads)  # the initializer set the default for threads created later

    def submit(self, fn, *args) -> Future:  # type: ignore[no-untyped-def]
        """Run ``fn(*args)`` on a worker, under the caller's grad mode (it is per thread)."""
        grad = torch.is_grad_enabled()
        context = copy_context()  # the caller's context variables (a tiled run's statistics)

        def task():  # type: ignore[no-untyped-def]
            with torch.set_grad_enabled(grad):
                return context.run(fn, *args)

        return self._pool.submit(task)


def _one_thread() -> None:
    torch.get_num_threads()  # run torch's lazy per-thread initialisation first, or it would undo the next line
    torch.set_num_threads(1)


_POOL: BranchPool | None = None
_POOL_LOCK = threading.Lock()
#: Off by default (``KOEL_CONCURRENT_BRANCHES=1`` turns them on). With libgomp's default wait policy the
#: branches were 3-4.5% faster over bench/speed.py's 30 sentences on 2 cores (0.213 vs 0.219 and 0.220
#: vs 0.230 s per audio second; 0.189 vs 0.195 with polyphase convolutions and bf16 PL-BERT; with
#: OMP_WAIT_POLICY=PASSIVE the single chain was faster, 0.177 vs 0.188), but they raise memory: one
#: sentence peaked 35-80 MB higher (1,271-1,293 vs 1,210-1,247 MB), and on bench/longform.py's 20,000
#: words the run with them on had reached 1,567 MB after 8 minutes (about 5% of the text), against
#: 1,387 MB with them off at the same time and 1,226 MB for one sentence (limit: +300 MB; both runs had
#: PL-BERT in bf16 then).
_CONCURRENT = os.environ.get("KOEL_CONCURRENT_BRANCHES", "0") == "1"


def set_concurrent_branches(enabled: bool) -> bool:
    """Switch the generator's concurrent branches on or off (process-wide); returns the old setting.

    Off, :class:`ConcurrentGenerator` runs as one chain of multi-threaded ops (profilers attribute
    the work to the calling thread, and results match bit for bit across thread counts).
    """
    global _CONCURRENT
    old, _CONCURRENT = _CONCURRENT, enabled
    return old


def branch_pool() -> BranchPool | None:
    """The shared pool when torch runs on 2-3 threads (where it beats intra-op parallelism), else None."""
    global _POOL
    threads = torch.get_num_threads()
    if not _CONCURRENT or not 2 <= threads <= 3:
        return None
    with _POOL_LOCK:
        if _POOL is None or _POOL.workers != threads:
            _POOL = BranchPool(threads)
        return _POOL


class ConcurrentGenerator(Generator):
    """The same Generator, with its noise branches and per-stage resblocks run as concurrent tasks.

    Every tensor is computed by the same modules and summed in the same order as
    :meth:`Generator.forward`, so the outputs are identical; only the scheduling differs.
    """

    def __init__(self, generator: Generator) -> None:
        nn.Module.__init__(self)
        self.__dict__.update(generator.__dict__)  # adopt modules, buffers and settings as they are

    def forward(
        self,
        x: torch.Tensor,
        s: torch.Tensor,
        f0: torch.Tensor | None,
        f0_lengths: torch.Tensor | None = None,
        har: torch.Tensor | None = None,
        last_stage: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """As :meth:`Generator.forward`; ``har`` passes precomputed harmonic features (then ``f0`` is unused)."""
        pool = branch_pool() if x.device.type == "cpu" and not exporting() else None
        if pool is None:
            return super().forward(x, s, f0, f0_lengths, har, last_stage)
        har = self.source_features(f0, f0_lengths, har)
        masks = self.step_masks(x, f0_lengths)
        hars = self.stage_sources(x, har, last_stage, f0_lengths)
        n, k = self.num_upsamples, self.num_kernels
        noise: list[Future | torch.Tensor | None] = [None] * n
        for i in reversed(range(n)):  # the late stages' noise branches are the longest: start them first
            task = lambda i=i: self.noise_res[i](self.noise_convs[i](hars[i]), s, masks[i + 1])  # noqa: E731
            noise[i] = pool.submit(task)
        for i in range(n):
            if last_stage is not None and i == n - 1:
                x = self.crop_last_stage(x, last_stage)
            x = self.ups[i](apply_mask(F.leaky_relu(x, 0.1), masks[i]))
            if i == n - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            source = noise[i]
            x = x + cast(torch.Tensor, source.result() if isinstance(source, Future) else source)
            blocks = [self.resblocks[i * k + j] for j in range(k)]
            # longest kernels first, summed in the reference order
            futures = [pool.submit(block, x, s, masks[i + 1]) for block in reversed(blocks)]
            branches = [f.result() for f in reversed(futures)]
            xs = branches[0]
            for branch in branches[1:]:
                xs = xs + branch
            x = xs / k
        return self.conv_post(apply_mask(F.leaky_relu(x, 0.01), masks[-1]))


@dataclass
class TileStream:
    """A batch-1 synthesis whose audio comes out in time tiles: ``durations`` now, ``pieces`` lazily."""

    durations: torch.Tensor  # [T] frames per token
    pieces: Iterator[torch.Tensor]  # consecutive audio pieces; together 600 * sum(durations) samples


def _decoder_features(
    decoder: Decoder, asr: torch.Tensor, f0: torch.Tensor, energy: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """Decoder.forward up to the generator input (batch 1, no padding): [1, C, 2F] at 80 Hz."""
    f0c = decoder.F0_conv(f0.unsqueeze(1))
    nc = decoder.N_conv(energy.unsqueeze(1))
    x = decoder.encode(torch.cat([asr, f0c, nc], dim=1), s)
    asr_res = decoder.asr_res(asr)
    for block in cast(nn.ModuleList, decoder.decode):
        x = block(torch.cat([x, asr_res, f0c, nc], dim=1), s)
    return cast(torch.Tensor, x)


TILE_MARGIN = 16  # context frames on each side of a generator tile (its receptive field is about 8)


def tile_window(frames: int, margin: int = TILE_MARGIN) -> int:
    """Width of the fixed window that holds any tile of at most ``frames`` plus its margins."""
    return frames + 2 * margin


def tile_bounds(n: int, first_frames: int, frames: int, growth: float = 1.0, whole: int = 0) -> list[int]:
    """Tile edges over ``n`` frames: a first tile of ``first_frames`` and, while shorter than
    ``frames``, each next one ``growth`` times longer; the frames left are then cut into the fewest
    tiles of at most ``frames``, all of (nearly) the same length. ``n <= whole`` gives one tile, and
    ``first_frames == frames`` cuts the whole utterance into equal tiles.

    Growing tiles suit streaming: a short first tile is ready early, and each later tile is computed
    while the ones before it play. Equal tiles bound memory on long utterances: after the first, no
    tile is wider than ``frames`` plus its margins, and there is no sliver at the end (each tile's
    statistics and context come from a reasonable span), whatever ``n`` is.
    """
    if growth < 1.0:
        raise ValueError(f"tile growth must be >= 1, got {growth}")
    if first_frames < 1 or frames < 1:
        raise ValueError(f"tile sizes must be positive, got first_frames={first_frames}, frames={frames}")
    if n <= max(whole, first_frames):
        return [0, n]
    bounds, size = [0], float(first_frames)
    if first_frames > frames:
        bounds.append(first_frames)
    while size < frames and n - bounds[-1] > size:
        bounds.append(bounds[-1] + max(1, round(size)))
        size = size * growth if growth > 1.0 else float(frames)
    start, rest = bounds[-1], n - bounds[-1]
    count = -(-rest // frames)
    return bounds + [start + (rest * k) // count for k in range(1, count + 1)]


def _adain_layers(decoder: nn.Module) -> dict[str, AdaIN1d]:
    """The AdaIN layers of the decoder and generator by module name: what a :class:`TilePrior` keys."""
    return {name: m for name, m in decoder.named_modules() if isinstance(m, AdaIN1d)}


@dataclass(frozen=True)
class TilePrior:
    """AdaIN statistics of one whole utterance, to start a tiled generator's running statistics.

    A tiled generator normalises each AdaIN layer over the tiles computed so far (see
    :func:`generate_tiles`), so its first tile has only its own short window to normalise over, and
    the shorter that window the further its level and timbre stray from the untiled audio. Starting
    the running statistics from another utterance of the same voice (a calibration sentence, see
    :func:`tile_prior`) fixes that: the first tile then normalises over the calibration's statistics
    merged with its own, and each later tile leans less on the calibration as its own frames add up.

    ``stats`` maps each fused AdaIN layer of the decoder and generator (its module name under
    ``model.decoder``) to the calibration's (mean, centred sum of squares, count), the first two
    float64 [1, C, 1]. ``weight`` scales the calibration's count (and sum of squares) when merged: 1
    counts it as the frames it had.
    """

    stats: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    weight: float = 1.0

    def running(self, decoder: nn.Module) -> dict[object, tuple]:
        """Running statistics (:func:`generate_tiles`' ``running``) that start from this prior."""
        if self.weight <= 0:
            return {}
        layers, w = _adain_layers(decoder), self.weight
        return {
            id(layers[k]): (mean, m2 * w, count * w)
            for k, (mean, m2, count) in self.stats.items()
            if k in layers
        }

    def check(self, decoder: nn.Module) -> None:
        """Raise ValueError unless this prior holds statistics of exactly ``decoder``'s fused AdaIN
        layers, shaped as they are (a prior made for other weights or another koel changes nothing
        or everything, silently)."""
        layers = _adain_layers(decoder)
        if set(self.stats) != set(layers):
            raise ValueError(
                f"tile prior layers differ from the model's ({len(self.stats)} vs {len(layers)})"
            )
        for name, (mean, m2, _) in self.stats.items():
            channels = cast(nn.Linear, layers[name].fc).out_features // 2
            if mean.shape[-2:] != (channels, 1) or m2.shape != mean.shape:
                raise ValueError(f"tile prior statistics of {name} have shape {list(mean.shape)}")

    def state(self) -> dict[str, object]:
        """Plain tensors and numbers (for ``torch.save`` / ``torch.load(weights_only=True)``)."""
        return {
            "weight": self.weight,
            "names": list(self.stats),
            "means": [v[0] for v in self.stats.values()],
            "m2": [v[1] for v in self.stats.values()],
            "counts": [float(v[2]) for v in self.stats.values()],
        }

    @classmethod
    def from_state(cls, state: dict) -> TilePrior:
        names, means, m2, counts = state["names"], state["means"], state["m2"], state["counts"]
        if not len(names) == len(means) == len(m2) == len(counts):
            raise ValueError("tile prior state: names, means, m2 and counts differ in length")
        stats = {
            str(n): (
                torch.as_tensor(a, dtype=torch.float64),
                torch.as_tensor(b, dtype=torch.float64),
                float(c),
            )
            for n, a, b, c in zip(names, means, m2, counts, strict=True)
        }
        return cls(stats, float(state["weight"]))


def generate_tiles(
    gen: Generator,
    x: torch.Tensor | Callable[[], torch.Tensor],
    s: torch.Tensor,
    har: torch.Tensor | Callable[[int], torch.Tensor],
    bounds: list[int],
    *,
    margin: int = TILE_MARGIN,
    overlap: int = 8,
    running_stats: bool = True,
    width: int = 0,
    running: dict[object, tuple] | None = None,
    head: Callable[[int], torch.Tensor | None] | None = None,
    trim: bool = False,
) -> Iterator[torch.Tensor]:
    """Run the generator over ``x`` [1, C, n] (80 Hz) tile by tile; yield consecutive audio pieces.

    Tile k covers frames ``bounds[k]:bounds[k+1]``, computed with ``margin`` frames of context on
    both sides (the generator's receptive field is about 8 frames). Neighbouring tiles are
    crossfaded over ``overlap`` frames centred on their common edge, so the small level and timbre
    differences that come from tiled AdaIN statistics never meet in a step. The harmonic source
    ``har`` is computed for the whole utterance, so its phase runs on; it may be a function that
    gives features valid over at least the first ``hi`` frames (:class:`_HarmonicSource`).

    The untiled generator normalises each AdaIN layer over the whole utterance. With
    ``running_stats`` (the default) a tile normalises over all frames computed so far, its own
    included: the last tile sees the whole utterance's statistics and the first only its own
    (margins counted twice, about 8% of 400-frame tiles); otherwise each tile uses its own span.
    Fused AdaIN layers (:func:`accelerate`) only; the reference blocks always use their own span.
    ``running`` (:meth:`TilePrior.running`) starts the running statistics from a calibration
    utterance's instead of from nothing, so even a short first tile normalises over a long span.

    ``x`` may be a function that returns it (called once, when a tile first needs it), with ``head``
    a function that gives the features of at least the utterance's first ``hi`` frames computed on
    their own, or None: a tile that ends (margin included) at frame ``hi`` is computed from what
    ``head(hi)`` returns if that is not None, so the first tiles need not wait for the whole
    utterance's features.

    ``width`` > 0 computes every tile on a window of exactly that many frames (or the whole
    utterance if shorter), centred on the tile and moved inward at the ends: then every tile of
    every utterance has the same shapes, so the heap blocks and cached convolution primitives of one
    tile serve all the others (new shapes in the middle of a run fragment the heap). Each tile and
    its margins must fit: ``width >= max tile + 2 * margin``.

    With ``trim`` the generator's last stage (4800 Hz, about half its work) runs only on the tile,
    its crossfades and that stage's own reach (:meth:`Generator.last_stage_reach`), not on the whole
    margin, which only the earlier stages need: a 24-frame first tile's last stage runs on 31 frames
    instead of 40, a 36-frame tile's on 50 instead of 68. The audio is the same up to the AdaIN
    statistics of that stage, which then count the frames it computes (with fixed-width windows the
    cut has a fixed width too).
    """
    if not 0 <= overlap <= margin:
        raise ValueError(f"overlap must be between 0 and margin ({margin}), got {overlap}")
    n = bounds[-1]
    if isinstance(x, torch.Tensor) and x.shape[-1] != n:
        raise ValueError(f"tile bounds end at frame {n}, but x has {x.shape[-1]} frames")
    width = width if len(bounds) > 2 else 0  # one tile: the utterance itself
    longest = max(b - a for a, b in itertools.pairwise(bounds))
    if width and width < tile_window(longest, margin):
        raise ValueError(
            f"window width {width} is narrower than a tile ({longest}) and its margins ({margin})"
        )
    # spectrogram frames per input frame (60)
    per = (har.shape[-1] - 1) // n if isinstance(har, torch.Tensor) else math.prod(gen.ups_rates())
    hop = gen.hop * per  # samples per input frame (300)
    # half-width of each edge's crossfade (samples): ``overlap / 2`` frames where both tiles have
    # that much context and neither tile is shorter than its two crossfades
    halves = (
        [0]
        + [
            min(overlap * hop // 2, hop * min(b - a, c - b) // 2)
            for a, b, c in zip(bounds[:-2], bounds[1:-1], bounds[2:], strict=True)
        ]
        + [0]
    )
    # frames the last stage needs beyond a tile's edges: its crossfades and the stage's own reach
    reach = overlap // 2 + gen.last_stage_reach() if trim else 0
    tail = torch.zeros(0)
    # one tile is the untiled computation: no statistics to carry (the running ones round
    # differently from the untiled path)
    carry = running_stats and len(bounds) > 2
    stats = (running if running is not None else {}) if carry else None
    whole: torch.Tensor | None = x if isinstance(x, torch.Tensor) else None
    for k in range(len(bounds) - 1):
        start, end = bounds[k], bounds[k + 1]
        lo, hi = max(0, start - margin), min(n, end + margin)
        if width:
            lo = min(max(0, (start + end - width) // 2), max(0, n - width))
            hi = min(n, lo + width)
        early = head(hi) if head is not None else None
        if early is not None:
            features = early[..., lo:hi]
        else:
            if whole is None:
                whole = cast(Callable[[], torch.Tensor], x)()
            features = whole[..., lo:hi]
        keep = (
            _last_stage_frames(start - lo, end - lo, hi - lo, reach, longest if width else 0)
            if trim
            else None
        )
        token = _RUNNING_STATS.set(stats)
        try:
            source = har if isinstance(har, torch.Tensor) else har(hi)
            spec = gen(features, s, None, har=source[..., per * lo : per * hi + 1], last_stage=keep)
        finally:
            _RUNNING_STATS.reset(token)
        audio = gen.spectrogram_to_audio(spec)[0].float()
        first = lo + (keep[0] if keep else 0)  # the input frame where the audio starts
        h0, h1 = halves[k], halves[k + 1]
        stop = hop * (end - first) - h1
        piece = audio[hop * (start - first) - h0 : stop]
        if h0:
            fade = (torch.arange(2 * h0, device=audio.device, dtype=audio.dtype) + 0.5) / (2 * h0)
            piece = torch.cat([tail * (1 - fade) + piece[: 2 * h0] * fade, piece[2 * h0 :]])
        tail = audio[stop : stop + 2 * h1]
        yield piece


def _last_stage_frames(
    start: int, end: int, window: int, reach: int, fixed: int = 0
) -> tuple[int, int] | None:
    """The window frames (a, b) the generator's last stage needs for a tile at ``start:end`` of a
    ``window``-frame window: ``reach`` more on each side, within the window; None if that is the whole
    window. ``fixed`` > 0 (the longest tile of a fixed-width run) makes every cut ``fixed + 2 reach``
    wide, moved inward at the window's end, so all tiles keep the same shapes."""
    a, b = max(0, start - reach), min(window, end + reach)
    if fixed:
        width = fixed + 2 * reach
        if width >= window:
            return None
        a = min(a, window - width)
        b = a + width
        if b < min(window, end + reach):  # cannot happen for tiles of at most ``fixed`` frames
            return None
    return None if (a, b) == (0, window) else (a, b)


def _utterance(
    model: KokoroModel, input_ids: torch.Tensor, ref_s: torch.Tensor, speed: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The text side of one utterance: (ids, s_a, s_p, d, durations), batch 1, inputs checked."""
    ids = input_ids.to(model.device)
    style = ref_s.to(model.device, torch.float32)
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"one utterance at a time: input_ids [1, T], got {list(ids.shape)}")
    model.check_inputs(ids, style, None)
    with torch.no_grad():
        s_a, s_p = model._split_style(style)
        d, logits = model.prosody_features(ids, None, s_p)
        speed_t = torch.tensor([float(speed)], device=ids.device)
        durations = model.durations_from_logits(logits, speed_t)
    return ids, s_a, s_p, d, durations


def _frame_features(
    model: KokoroModel,
    ids: torch.Tensor,
    s_p: torch.Tensor,
    d: torch.Tensor,
    durations: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder's inputs for one utterance: (aligned text features [1, C, F] at 40 Hz, F0 and
    energy [1, 2F] at 80 Hz)."""
    from koel.model.kokoro import alignment_from_durations

    with torch.no_grad():
        alignment = alignment_from_durations(durations)
        f0, energy = model.predictor.f0_energy(d.transpose(1, 2) @ alignment, s_p, None)
        asr = model.text_encoder(ids, None, None) @ alignment
    return asr, f0, energy


#: Frames (80 Hz) of context past the end of the decoder's head window (:func:`stream_tiles`): its
#: convolutions see about 20 frames on each side (nine 3-tap layers at 40 Hz, two at 80 Hz).
DECODER_MARGIN = 24
#: Tiles computed from decoder head windows, before the decoder runs over the whole utterance.
#: Two: after the first tile a player holds only that tile's audio (0.25 s), too little to also
#: wait for the whole decoder (about 80 ms for 3 s of speech): with one, the paragraph of
#: bench/speed.py stalled 0.09 s (median of 6 runs, tiles doubling) after its first piece, with two
#: 0.05; with two and tiles growing by 1.5 (koel.pipeline.TILE_GROWTH) 0.016. Each of the two has
#: a window of its own (:class:`_HeadWindows`), so the first tile waits only for the decoder over
#: its own 40 frames and their margin.
HEAD_TILES = 2


def _decoder_head(
    decoder: Decoder,
    asr: torch.Tensor,
    f0: torch.Tensor,
    energy: torch.Tensor,
    s: torch.Tensor,
    frames: int,
    running: dict[object, tuple],
) -> torch.Tensor | None:
    """The generator input of the first ``frames`` frames (80 Hz), the decoder run on them and
    :data:`DECODER_MARGIN` more only, its AdaIN statistics merged into ``running``; None when that
    window is (nearly) the whole utterance."""
    half = -(-(frames + DECODER_MARGIN) // 2)  # 40 Hz frames
    if 2 * half >= f0.shape[-1]:
        return None
    token = _RUNNING_STATS.set(running)
    try:
        with torch.no_grad():
            x = _decoder_features(decoder, asr[..., :half], f0[..., : 2 * half], energy[..., : 2 * half], s)
    finally:
        _RUNNING_STATS.reset(token)
    return x[..., :frames]


class _HeadWindows:
    """The generator input for the first tiles of a stream (``head`` of :func:`generate_tiles`): tile
    k < len(``ends``) ends at frame ``ends[k]``, and its features come from the decoder run on that
    tile's end, the generator's ``margin`` and :data:`DECODER_MARGIN` alone (:func:`_decoder_head`),
    so the first audio waits for the decoder over the first tile's window only, not the first two's.

    Every window's AdaIN statistics start from ``running`` (a prior's) as it stands, on a copy, so a
    later window counts its frames once, as one head window of its length did; the decoder's layers
    never read ``running`` after. The last window computed serves any tile that fits in it; past the
    last end, None (the caller then runs the decoder over the whole utterance).
    """

    def __init__(
        self,
        decoder: Decoder,
        asr: torch.Tensor,
        f0: torch.Tensor,
        energy: torch.Tensor,
        s: torch.Tensor,
        ends: list[int],
        margin: int,
        running: dict[object, tuple],
    ) -> None:
        self.inputs = (decoder, asr, f0, energy, s)
        self.windows = [end + margin for end in ends]
        self.running = running
        self.done: torch.Tensor | None = None

    def __call__(self, frames: int) -> torch.Tensor | None:
        if self.done is not None and frames <= self.done.shape[-1]:
            return self.done
        window = next((w for w in self.windows if w >= frames), None)
        if window is None:
            return None
        self.done = _decoder_head(*self.inputs, window, dict(self.running))
        return self.done


class _HarmonicSource:
    """The generator's harmonic features of an utterance's F0 for :func:`generate_tiles`, called with
    the end ``hi`` of the window a tile needs: the first call computes them from a prefix of the F0
    just past ``hi`` (a stream's first tile needs 40 of a chunk's hundreds of frames: 0.7 instead of
    3.3 ms before its first audio), every later one from the whole utterance, once.

    The source is causal up to the F0's interpolation and the STFT's window, which read
    :data:`HARMONIC_MARGIN` frames at most past a frame, so the prefix's features over the window
    are the whole utterance's (equal, or a float32 rounding apart where cumulative sums are
    vectorised differently); the phase runs on into the later tiles.
    """

    def __init__(self, gen: Generator, f0: torch.Tensor) -> None:
        self.gen, self.f0 = gen, f0
        self.whole: torch.Tensor | None = None
        self.first = True

    def __call__(self, hi: int) -> torch.Tensor:
        with torch.no_grad():
            if self.first and hi + HARMONIC_MARGIN < self.f0.shape[-1]:
                self.first = False
                return self.gen.harmonic_features(self.f0[:, : hi + HARMONIC_MARGIN])
            self.first = False
            if self.whole is None:
                self.whole = self.gen.harmonic_features(self.f0)
            return self.whole


#: F0 frames past a window that :class:`_HarmonicSource` computes a prefix's features over.
HARMONIC_MARGIN = 2


def tile_prior(
    model: KokoroModel, input_ids: torch.Tensor, ref_s: torch.Tensor, speed: float = 1.0, weight: float = 1.0
) -> TilePrior:
    """The AdaIN statistics of one whole (calibration) utterance, as a :class:`TilePrior`.

    Costs one synthesis without its inverse transform. Only the accelerated decoder and generator
    blocks (:func:`accelerate`) keep running statistics; on a model without them the prior is empty
    and changes nothing.
    """
    ids, s_a, s_p, d, durations = _utterance(model, input_ids, ref_s, speed)
    asr, f0, energy = _frame_features(model, ids, s_p, d, durations)
    running: dict[object, tuple] = {}
    token = _RUNNING_STATS.set(running)
    try:
        with torch.no_grad():
            x = _decoder_features(model.decoder, asr, f0, energy, s_a)
            gen = cast(Generator, model.decoder.generator)
            gen(x, s_a, None, har=gen.harmonic_features(f0))
    finally:
        _RUNNING_STATS.reset(token)
    names = {id(m): name for name, m in _adain_layers(model.decoder).items()}
    stats = {names[k]: cast(tuple, v) for k, v in running.items() if k in names}
    return TilePrior(stats, weight)


def stream_tiles(
    model: KokoroModel,
    input_ids: torch.Tensor,
    ref_s: torch.Tensor,
    speed: float = 1.0,
    *,
    first_frames: int = 24,
    frames: int = 160,
    margin: int = TILE_MARGIN,
    overlap: int = 8,
    running_stats: bool = True,
    growth: float = 1.0,
    whole: int = 0,
    fixed_width: bool = False,
    prior: TilePrior | None = None,
    trim: bool | None = None,
) -> TileStream:
    """Synthesize one utterance with the generator run in time tiles (early first audio, bounded memory).

    The text side, durations, F0/energy and the decoder run on the whole utterance (about a tenth
    of the work); the generator then runs on tiles of ``first_frames`` and then ``frames``
    generator-input frames (80 Hz, 300 samples each; tiles grow by ``growth`` from the first to
    ``frames``, see :func:`tile_bounds`) through :func:`generate_tiles`. What tiles
    cannot reproduce exactly is AdaIN's statistics, which the untiled generator takes over the
    whole utterance (see ``running_stats`` there); the approximation is measured in bench/tiling.py
    and bench/speed.py (ttfa section).

    With a ``prior`` (:func:`tile_prior` of a calibration utterance of the same voice) the running
    statistics start from the prior's, and the first tile does not wait for the decoder to run over
    the whole utterance: the decoder runs first on the first :data:`HEAD_TILES` tiles' window alone
    (plus :data:`DECODER_MARGIN` frames; its AdaIN statistics likewise merged with the prior's), and
    on the whole utterance, as untiled, only for the tiles after them.

    ``trim`` is :func:`generate_tiles`'; None (the default) trims where the statistics start from a
    ``prior``: there it changed nothing measurable (log-mel correlation to the untiled audio over
    bench/speed.py's 30 sentences 0.9928 either way) and made the paragraph's first chunk 10-15%
    cheaper (first audio 15-30 ms earlier). Without a prior the last stage's statistics lose the
    frames trimmed: growing tiles 0.9749 against 0.9781 untrimmed, and fixed-width tiles of an
    18.9 s chunk 0.9994 against 1.0000 for 2-3% of its time; those stay untrimmed.
    """
    if first_frames < 1 or frames < 1 or margin < 0:
        raise ValueError(f"tile sizes must be positive, got first_frames={first_frames}, frames={frames}")
    ids, s_a, s_p, d, durations = _utterance(model, input_ids, ref_s, speed)

    def pieces() -> Iterator[torch.Tensor]:
        asr, f0, energy = _frame_features(model, ids, s_p, d, durations)
        gen = cast(Generator, model.decoder.generator)
        har = _HarmonicSource(gen, f0)
        bounds = tile_bounds(f0.shape[-1], first_frames, frames, growth, whole)
        running: dict[object, tuple] | None = None
        head: Callable[[int], torch.Tensor | None] | None = None
        if prior is not None and prior.weight > 0 and running_stats and len(bounds) > 2:
            running = prior.running(model.decoder)
            if not fixed_width:  # the first tiles from the decoder run on windows of their own
                head = _HeadWindows(
                    model.decoder, asr, f0, energy, s_a, bounds[1 : HEAD_TILES + 1], margin, running
                )

        def features() -> torch.Tensor:
            with torch.no_grad():
                return _decoder_features(model.decoder, asr, f0, energy, s_a)

        with torch.no_grad():
            yield from generate_tiles(
                gen,
                features,
                s_a,
                har,
                bounds,
                margin=margin,
                overlap=overlap,
                running_stats=running_stats,
                width=tile_window(frames, margin) if fixed_width else 0,
                running=running,
                head=head,
                trim=running is not None if trim is None else trim,
            )

    return TileStream(durations[0], pieces())


def bf16_is_fast(device: torch.device) -> bool:
    """True where bfloat16 convolutions run natively: CUDA with bf16, or a CPU with AVX512-BF16 or AMX."""
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


def resolve_precision(precision: Precision | str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 where :func:`bf16_is_fast`, else fp32."""
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def holds_half_weights(model: nn.Module) -> bool:
    """Whether any of ``model``'s compiled products reads float16 packed weights (``half_weights``)."""
    return any(
        isinstance(b, torch.Tensor) and b.dtype == torch.float16
        for m in model.modules()
        if isinstance(m, (FastConv1d, BlockDFTConv1d))
        for b in m.buffers(recurse=False)
    )


def _plain_convs(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, name) of the model's plain stride-1 Conv1d layers outside the fused blocks: the text
    encoder's three, the decoder's ``asr_res``, the F0 and energy projections, the generator's last
    noise convolution and ``conv_post``. oneDNN ran ``conv_post``'s 22 outputs at 4 GMAC/s and the
    1x1 noise convolution (22 -> 128 channels over a 4 s sentence's 22,800 frames) in 5.6 ms. All
    but ``conv_post`` (which was there already) moved to the compiled kernel, AVX2 code path,
    alternating in one process: a stream's first audio 0.983x, whole sentences (bench/speed.py's
    30) 0.999x."""

    found: list[tuple[nn.Module, str]] = []

    def walk(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, (FastAdaINResBlock1, FastAdainResBlk1d)):
                continue  # their convolutions are planned already (the originals stay unused)
            if (
                type(child) is nn.Conv1d
                and child.stride[0] == 1
                and child.groups == 1
                and child.dilation[0] == 1
                and not parametrize.is_parametrized(child)
            ):
                found.append((parent, name))
            walk(child)

    decoder = getattr(model, "decoder", None)
    for root in (
        getattr(model, "text_encoder", None),
        getattr(model, "predictor", None),
        getattr(decoder, "asr_res", None),
        getattr(decoder, "generator", None),
    ):
        if root is not None:
            walk(root)
    return found


def accelerate(
    model: nn.Module,
    precision: Precision | str = "auto",
    *,
    block_dft: bool = True,
    compiled: bool = True,
    int8_text: bool | None = None,
    half_weights: bool | None = None,
) -> torch.dtype:
    """Swap a loaded KokoroModel's heavy blocks for their fast versions, in place; returns the conv dtype.

    The text side (LSTMs, duration head) stays in fp32. PL-BERT's products run in int8 where its
    weights are exact int8 (``int8_text``; default on, ``KOEL_INT8_TEXT=0`` turns it off): the
    embedded weights, dequantised from the official int8 export, are, and that export runs these
    products in int8 too (see :class:`FastLinear`); other weights keep float32 products. On
    bench/speed.py's 30 sentences (2-core Zen 3) int8 PL-BERT took the engine from 0.56x to 0.54x
    the export's time; 2.5% of the token durations moved (by 1-2 frames, total -0.14%). PL-BERT's
    products in bf16 (weights cast once, rows padded to a multiple of 32 tokens) took PL-BERT from
    21.6 to 13.0 ms per second of audio, 2-3% of the engine, but took bench/longform.py's
    20,000-word run over its memory bound (+304 MB over one sentence; limit 300; +291 twice before).

    In float32, the compiled kernel's packed weights (block-DFT spectra, direct and Winograd
    convolutions: 1149 MB, of which 431 MB the long-block twins of :func:`plan_conv`) are kept in
    float16 (``half_weights``; default on, ``KOEL_HALF_WEIGHTS=0`` turns it off) and widened to
    float32 in L1, a tile of them at a time, for float32 products: 574 MB less memory, and half the
    bytes to read where a product has only a few dozen columns (a stream's first tile, the decoder's
    head window). Each weight keeps 11 significant bits (relative error at most 2^-11; the bf16 engine
    keeps 8). Measured on the AVX2 code path (2-core AVX512-BF16 CPU, kernel built for AVX2): the same
    whole-sentence speed (0.995x, bench/speed.py's 30 sentences alternating on one engine), first
    audio 3% earlier (180 against 185 ms, median of 30 alternating); with them the engine's WER is
    0.65% and DNSMOS 3.369 (bench/speed.py; the export 0.97% and 3.332).

    ``block_dft=False`` keeps every convolution direct (for int8 export, whose quantiser rewrites
    Conv weights); ``compiled=False`` plans for PyTorch's transforms (an ONNX graph, which cannot call
    koel's kernel). Call after moving the model to its device; weight norm must be folded.
    """
    from koel.model.kokoro import KokoroModel

    if not isinstance(model, KokoroModel):
        raise TypeError(f"accelerate() takes a KokoroModel, got {type(model).__name__}")
    dtype = resolve_precision(precision, model.device)
    if int8_text is None:
        int8_text = os.environ.get("KOEL_INT8_TEXT", "1") != "0"
    if half_weights is None:
        half_weights = os.environ.get("KOEL_HALF_WEIGHTS", "1") != "0"
    half = {"half_weights": half_weights}
    # first, while the process is small: the stack is made before the layers' own weights are dropped
    for group in (model.decoder, model.predictor):  # each reads one style vector (acoustic, prosodic)
        norms = [m for m in group.modules() if isinstance(m, AdaIN1d)]
        if norms and "style_projections" not in norms[0].__dict__:
            StyleProjections(norms)
    gen = model.decoder.generator
    for blocks in (gen.resblocks, gen.noise_res):
        for i, block in enumerate(blocks):
            if not isinstance(block, FastAdaINResBlock1):
                blocks[i] = FastAdaINResBlock1(
                    cast(AdaINResBlock1, block), dtype, block_dft, compiled, **half
                )
                trim()  # each block's float64 spectra (tens of MB) back to the OS before the next
    for blocks in (model.decoder.decode, model.predictor.F0, model.predictor.N):
        for i, block in enumerate(blocks):
            if not isinstance(block, FastAdainResBlk1d):
                blocks[i] = FastAdainResBlk1d(cast(AdainResBlk1d, block), dtype, compiled, **half)
    if not isinstance(model.decoder.encode, FastAdainResBlk1d):
        model.decoder.encode = FastAdainResBlk1d(model.decoder.encode, dtype, compiled, **half)
    if not isinstance(gen, ConcurrentGenerator):
        model.decoder.generator = gen = ConcurrentGenerator(gen)
    float_kernel = compiled and dtype == torch.float32 and native.mix_available()
    if model.device.type == "cpu" and (float_kernel or int8_text):
        for module in list(model.bert.modules()):  # PL-BERT's products (one shared layer, 12 passes)
            for name, child in list(module.named_children()):
                if type(child) is nn.Linear:
                    setattr(module, name, FastLinear.adopt(child, int8=int8_text))
    if compiled and model.device.type == "cpu" and native.mix_available():
        for module in list(model.modules()):  # the text side's LSTMs (float32 whatever ``dtype``)
            for name, child in list(module.named_children()):
                if isinstance(child, nn.LSTM) and FastLSTM.fits(child):
                    setattr(module, name, FastLSTM.adopt(child))
    for i, up in enumerate(gen.ups):  # in float32, only where the compiled kernel takes them
        if not isinstance(up, FastConvTranspose1d):
            fast = FastConvTranspose1d.adopt(cast(nn.ConvTranspose1d, up), dtype, compiled, **half)
            if dtype != torch.float32 or cast(FastConv1d, fast.fast).packed:
                gen.ups[i] = fast
    if dtype == torch.float32:  # the remaining stride-1 convolutions, where the compiled kernel takes them
        for parent, name in _plain_convs(model):
            adopted = AdoptedConv1d.adopt(cast(nn.Conv1d, getattr(parent, name)), dtype, compiled, **half)
            if cast(FastConv1d, adopted.fast).packed:
                setattr(parent, name, adopted)
    log.info("fast path on: fused AdaIN+Snake, block-DFT long kernels, %s convolutions", str(dtype)[6:])
    return dtype


__all__ = [
    "TILE_MARGIN",
    "AdoptedConv1d",
    "BlockDFTConv1d",
    "BranchPool",
    "ConcurrentGenerator",
    "FastAdaINResBlock1",
    "FastAdainResBlk1d",
    "FastConv1d",
    "FastConvTranspose1d",
    "FastLSTM",
    "FastLinear",
    "StyleProjections",
    "TilePrior",
    "TileStream",
    "accelerate",
    "adain_snake",
    "bf16_is_fast",
    "branch_pool",
    "generate_tiles",
    "holds_half_weights",
    "plan_conv",
    "resolve_precision",
    "set_concurrent_branches",
    "stream_tiles",
    "tile_bounds",
    "tile_prior",
    "tile_window",
]
