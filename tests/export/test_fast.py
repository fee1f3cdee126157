"""The fast path (koel.model.fast) computes the reference model's function: fp32 to rounding, bf16 closely."""

from __future__ import annotations

import copy
import itertools
import math
from typing import cast
from unittest.mock import patch

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koel.model import native
from koel.model.fast import (
    AdoptedConv1d,
    BlockDFTConv1d,
    FastAdaINResBlock1,
    FastConv1d,
    FastConvTranspose1d,
    FastLinear,
    FastLSTM,
    accelerate,
    adain_snake,
    int8_linear_available,
    int8_rows,
    plan_conv,
)
from koel.model.generator import snake
from koel.model.layers import AdaIN1d, apply_mask, lengths_to_mask


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _wrap(ids: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros(1, dtype=torch.long)
    return torch.cat([zero, ids, zero])[None]


@pytest.mark.parametrize("masked", [False, True])
def test_adain_snake_equals_norm_then_snake(masked):
    torch.manual_seed(0)
    norm = AdaIN1d(16, 24)
    s, alpha = torch.randn(3, 16), torch.rand(1, 24, 1) + 0.2
    x = torch.randn(3, 24, 500) * 3 + 1.5  # a mean well away from zero stresses the variance formula
    mask = lengths_to_mask(torch.tensor([500, 321, 77]), 500) if masked else None
    with torch.no_grad():
        ref = apply_mask(snake(norm(x, s, mask), alpha), mask)
        out = adain_snake(x, norm, s, alpha, mask)
    err = (out - ref).abs().max().item()
    assert err < 1e-4, f"max error {err}"


@pytest.mark.parametrize("masked", [False, True])
def test_adain_snake_keeps_precision_when_the_mean_dominates(masked):
    norm = AdaIN1d(4, 2)
    x = 1000.0 + torch.randn(2, 2, 40000) * 0.01
    s, alpha = torch.zeros(2, 4), torch.ones(1, 2, 1)
    mask = lengths_to_mask(torch.tensor([40000, 30000]), 40000) if masked else None
    with torch.no_grad():
        err = _rel(adain_snake(x, norm, s, alpha, mask), apply_mask(snake(norm(x, s, mask), alpha), mask))
    # x itself is only resolved to 6e-5 (one ulp at 1000), i.e. 0.6% of its spread; a one-pass
    # variance would be off by orders of magnitude more
    assert err < 1e-2, f"relative error {err}"


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "d", "block", "batch"),
    [
        (16, 16, 11, 1, 32, 1),
        (16, 24, 11, 5, 128, 2),
        (8, 8, 7, 3, 64, 3),
        (12, 12, 3, 1, 16, 1),
        (16, 8, 11, 5, 32, 2),  # polyphase: blocks shorter than the dilated span (51)
        (8, 8, 7, 3, 16, 1),
    ],
)
def test_block_dft_conv_equals_conv1d(c_in, c_out, k, d, block, batch):
    torch.manual_seed(k + d)
    conv = nn.Conv1d(c_in, c_out, k, dilation=d, padding=d * (k - 1) // 2)
    for length in (1, 2, 37, 1000, 1001):
        x = torch.randn(batch, c_in, length)
        with torch.no_grad():
            ref = conv(x)
            out = BlockDFTConv1d(conv, torch.float32, block)(x)
            low_conv = BlockDFTConv1d(conv, torch.bfloat16, block)
            low = low_conv(x)
            low_conv.native = False  # the PyTorch transforms, as where no compiler is found
            low_torch = low_conv(x)
        assert out.shape == ref.shape == low.shape == low_torch.shape
        assert _rel(out, ref) < 2e-5, f"fp32 error {_rel(out, ref)} at length {length}"
        assert _rel(low, ref) < 2e-2, f"bf16 error {_rel(low, ref)} at length {length}"
        assert _rel(low_torch, ref) < 2e-2, f"bf16 (PyTorch transforms) error {_rel(low_torch, ref)}"


def test_packed_mixing_weights_serve_the_traced_graph_too():
    """With the compiled fp32 mixing the weights are kept only in its packed order; the ONNX-traceable
    computation unpacks them and gives the same convolution."""
    torch.manual_seed(3)
    conv = nn.Conv1d(10, 14, 11, dilation=3, padding=15)
    block = BlockDFTConv1d(conv, torch.float32, 64)
    assert block.packed == native.mix_available()
    x = torch.randn(1, 10, 700)
    with torch.no_grad():
        ref = conv(x)
        assert _rel(block(x), ref) < 2e-5
        assert _rel(block._traceable(x), ref) < 2e-5


@pytest.mark.parametrize("dilation", [1, 3])
@pytest.mark.parametrize("channels", [12, FastConv1d.WINOGRAD_MIN_CHANNELS])  # direct, Winograd
def test_fast_conv_in_the_compiled_kernel_equals_conv1d(dilation, channels):
    torch.manual_seed(dilation)
    conv = nn.Conv1d(channels, 10, 3, dilation=dilation, padding=dilation)
    fast = FastConv1d(conv, torch.float32)
    assert fast.packed == native.mix_available()
    assert fast.winograd == (fast.packed and channels >= FastConv1d.WINOGRAD_MIN_CHANNELS)
    x = torch.randn(2, channels, 301)
    with torch.no_grad():
        ref = conv(x)
        assert _rel(fast(x), ref) < 2e-6
        if fast.packed:
            residual = torch.randn_like(ref)
            assert fast.adds_into(x, residual)
            assert _rel(fast.add_into(x, residual.clone()), ref + residual) < 2e-6
        with patch("koel.model.fast.exporting", return_value=True):  # the traced graph: plain conv1d
            assert _rel(fast(x), ref) < 2e-6


@pytest.mark.parametrize(
    ("c_in", "c_out", "taps", "stride", "padding", "length", "bias"),
    [
        (8, 6, 20, 10, 5, 7, True),  # the generator's first upsampler, scaled down
        (5, 3, 12, 6, 3, 40, True),  # its second
        (4, 4, 6, 3, 0, 1, True),  # one input step
        (3, 5, 4, 2, 3, 9, False),  # padding past a stride
        (FastConv1d.WINOGRAD_MIN_CHANNELS, 4, 3, 1, 1, 20, True),  # 3 taps at stride 1: not Winograd's
    ],
)
def test_transposed_conv_runs_polyphase_in_the_compiled_kernel(
    c_in, c_out, taps, stride, padding, length, bias
):
    torch.manual_seed(length)
    conv = nn.ConvTranspose1d(c_in, c_out, taps, stride, padding=padding, bias=bias)
    fast = FastConv1d(conv, torch.float32)
    assert fast.packed == native.mix_available()
    assert torch.equal(fast._plain_weight(), conv.weight.detach())  # the packing loses nothing
    x = torch.randn(2, c_in, length)
    with torch.no_grad():
        ref = conv(x)
        out = fast(x)
        assert out.shape == ref.shape and _rel(out, ref) < 2e-6
        assert not fast.adds_into(x, torch.zeros_like(ref))
        with patch(
            "koel.model.fast.exporting", return_value=True
        ):  # the traced graph: plain conv_transpose1d
            assert _rel(fast(x), ref) < 2e-6


def test_transposed_conv_off_the_stride_grid_stays_with_pytorch():
    conv = nn.ConvTranspose1d(3, 4, 5, 2, padding=1)  # 5 taps are not a whole number of strides
    fast = FastConv1d(conv, torch.float32)
    assert not fast.packed
    x = torch.randn(1, 3, 11)
    with torch.no_grad():
        assert _rel(fast(x), conv(x)) < 2e-6


def test_fast_linear_keeps_the_parameters_and_the_result():
    torch.manual_seed(0)
    linear = nn.Linear(20, 30)
    fast = FastLinear.adopt(linear)
    assert fast.weight is linear.weight and fast.bias is linear.bias
    assert set(fast.state_dict()) == {"weight", "bias"}
    for rows in (3, 300):  # the compiled product, and MKL past max_rows
        x = torch.randn(2, rows, 20)
        with torch.no_grad():
            assert _rel(fast(x), linear(x)) < 2e-6
    x = torch.randn(4, 20, requires_grad=True)  # autograd: nn.Linear's own product
    fast(x).sum().backward()
    assert x.grad is not None and linear.weight.grad is not None


def _int8_grid_linear(
    n_in: int, n_out: int, levels: int = 64, seed: int = 0
) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear layer whose rows are int8 multiples of their own scale, as the official export stores them."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-levels, levels + 1, (n_out, n_in), generator=g)
    q[:, 0] = levels  # every row reaches the top level, as a max-abs quantiser's rows do
    scale = torch.rand(n_out, generator=g, dtype=torch.float64) * 0.01 + 0.001
    linear = nn.Linear(n_in, n_out)
    with torch.no_grad():
        linear.weight.copy_((q * scale[:, None]).float())
    return linear, q, scale


def _export_int8_linear(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """onnxruntime's DynamicQuantizeLinear + MatMulInteger in float64: uint8 activations per tensor
    (range widened to hold 0), int32 sums, then both scales and the bias."""
    x = x.double()
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    step = (hi - lo) / 255
    zero = min(255, max(0, round(-lo / step)))
    xq = torch.clamp(torch.round(x / step) + zero, 0, 255)
    return ((xq - zero) @ q.double().t()) * step * scale[None, :] + bias.double()


def test_int8_rows_recovers_exact_per_channel_int8_weights_only():
    for levels in (64, 127):
        linear, q, scale = _int8_grid_linear(40, 24, levels)
        rows = int8_rows(linear.weight)
        assert rows is not None
        got_q, got_scale, got_levels = rows
        assert got_levels == levels and torch.equal(got_q.long(), q)
        assert torch.allclose(got_scale, scale, rtol=1e-6)
    assert int8_rows(nn.Linear(40, 24).weight) is None  # float weights: no int8 grid
    off = _int8_grid_linear(40, 24)[0]
    with torch.no_grad():
        off.weight[3, 5] += 0.3 * float(off.weight[3].abs().max()) / 64  # one value off its row's grid
    assert int8_rows(off.weight) is None


@pytest.mark.skipif(not int8_linear_available(), reason="PyTorch's int8 linear (FBGEMM) is x86 only")
def test_fast_linear_in_int8_computes_the_exports_integer_product():
    torch.manual_seed(0)
    linear, q, scale = _int8_grid_linear(96, 80)
    fast = FastLinear.adopt(linear, int8=True)
    assert fast.int8 is not None
    assert set(fast.state_dict()) == {"weight", "bias"}
    x = torch.randn(1, 30, 96) * 2
    with torch.no_grad():
        out, exact = fast(x), linear(x)
    export = _export_int8_linear(x[0], q, scale, linear.bias.detach())[None]
    # the integer product of the export, to float rounding; 8-bit activations keep it within ~1% of float
    assert _rel(out, export) < 1e-4, _rel(out, export)
    assert 1e-4 < _rel(out, exact) < 0.02, _rel(out, exact)
    x = torch.randn(2, 96, requires_grad=True)  # autograd: float product
    assert _rel(fast(x).detach(), linear(x).detach()) < 2e-6
    plain = FastLinear.adopt(nn.Linear(96, 80), int8=True)  # float weights stay float
    assert plain.int8 is None


@pytest.mark.skipif(not int8_linear_available(), reason="PyTorch's int8 linear (FBGEMM) is x86 only")
def test_accelerate_runs_pl_berts_products_in_int8_only_where_the_weights_are_int8(tiny_model):
    tiny_model.fold_weight_norm()
    model = copy.deepcopy(tiny_model)
    accelerate(model, "fp32")  # the tiny model's random weights: float products
    linears = [m for m in model.bert.modules() if isinstance(m, FastLinear)]
    assert linears and all(m.int8 is None for m in linears)
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for m in model.bert.modules():
            if type(m) is nn.Linear:
                scale = m.weight.abs().amax(dim=1, keepdim=True) / 64
                m.weight.copy_(torch.round(m.weight / scale) * scale)
    ids = torch.randint(1, 100, (1, 20))
    with torch.no_grad():
        ref = model.bert(ids)
    off = copy.deepcopy(model)
    accelerate(off, "fp32", int8_text=False)
    assert all(m.int8 is None for m in off.bert.modules() if isinstance(m, FastLinear))
    accelerate(model, "fp32")
    linears = [m for m in model.bert.modules() if isinstance(m, FastLinear)]
    assert linears and all(m.int8 is not None for m in linears)
    with torch.no_grad():
        out = model.bert(ids)
    assert 0 < _rel(out, ref) < 0.05, _rel(out, ref)


def test_fast_lstm_keeps_the_parameters_and_the_result():
    torch.manual_seed(0)
    lstm = nn.LSTM(20, 32, batch_first=True, bidirectional=True)
    fast = FastLSTM.adopt(lstm)
    assert fast.weight_hh_l0 is lstm.weight_hh_l0 and set(fast.state_dict()) == set(lstm.state_dict())
    calls = []
    kernel = native.lstm

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return kernel(*args, **kwargs)

    with torch.no_grad(), patch("koel.model.fast.native.lstm", spy):
        for steps in (1, 7, 300):  # the compiled projections, and MKL's past FastLinear.max_rows
            x = torch.randn(1, steps, 20)
            out, (h, c) = fast(x)
            ref, (ref_h, ref_c) = lstm(x)
            assert _rel(out, ref) < 2e-6 and _rel(h, ref_h) < 2e-6 and _rel(c, ref_c) < 2e-6
        # a batch, a packed sequence and a given state are nn.LSTM's
        x = torch.randn(2, 5, 20)
        assert _rel(fast(x)[0], lstm(x)[0]) < 1e-6
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
        assert _rel(fast(packed)[0].data, lstm(packed)[0].data) < 1e-6
        hx = (torch.randn(2, 1, 32), torch.randn(2, 1, 32))
        assert _rel(fast(x[:1], hx)[0], lstm(x[:1], hx)[0]) < 1e-6
    assert calls == ([1, 7, 300] if native.mix_available() else [])
    x = torch.randn(1, 4, 20, requires_grad=True)  # autograd: nn.LSTM's own
    fast(x)[0].sum().backward()
    assert x.grad is not None and lstm.weight_hh_l0.grad is not None


def test_fast_lstm_takes_only_what_the_kernel_runs():
    assert FastLSTM.fits(nn.LSTM(8, 16, batch_first=True, bidirectional=True))
    for lstm in (
        nn.LSTM(8, 16, batch_first=True),  # one direction
        nn.LSTM(8, 16, bidirectional=True),  # time first
        nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True),
        nn.LSTM(8, 24, batch_first=True, bidirectional=True),  # not a multiple of 16 units
    ):
        assert not FastLSTM.fits(lstm)
        with pytest.raises(ValueError, match="FastLSTM takes"):
            FastLSTM.adopt(lstm)


def test_block_dft_conv_rejects_unsupported_shapes():
    with pytest.raises(ValueError, match="same"):
        BlockDFTConv1d(nn.Conv1d(4, 4, 5, padding=0), torch.float32, 16)
    with pytest.raises(ValueError, match="longer"):
        BlockDFTConv1d(nn.Conv1d(4, 4, 11, dilation=5, padding=25), torch.float32, 8)


def test_plan_conv_uses_block_dft_for_long_kernels_only():
    assert isinstance(plan_conv(nn.Conv1d(8, 8, 11, padding=5), torch.float32), BlockDFTConv1d)
    assert isinstance(plan_conv(nn.Conv1d(8, 8, 3, padding=1), torch.float32), FastConv1d)
    dilated = plan_conv(nn.Conv1d(8, 8, 11, dilation=5, padding=25), torch.float32)
    # sized for 11 taps, not for a 51 span: 32 with PyTorch's transforms, 128 with the compiled ones
    assert isinstance(dilated, BlockDFTConv1d) and dilated.block == (128 if native.available() else 32)
    big = nn.Conv1d(512, 512, 11, dilation=5, padding=25)
    assert isinstance(plan_conv(big, torch.float32, max_spectrum_values=1 << 20), FastConv1d)
    if native.available():  # compiled transforms: the longest of 128, 64, 32 within the budget
        for dtype in (torch.bfloat16, torch.float32):  # the budget counts values, whatever their size
            assert cast(BlockDFTConv1d, plan_conv(nn.Conv1d(8, 8, 7, padding=3), dtype)).block == 128
            generator = plan_conv(nn.Conv1d(128, 128, 11, padding=5), dtype)  # the 4800 Hz stage
            assert isinstance(generator, BlockDFTConv1d) and generator.block == 128 and generator.native
            wide = plan_conv(nn.Conv1d(256, 256, 11, padding=5), dtype)
            assert isinstance(wide, BlockDFTConv1d) and wide.block == 32 and wide.native
            # with the compiled float32 products, a twin in blocks of 64 for long inputs
            twin = (dtype == torch.float32 and native.mix_available()) or None
            assert (wide.long is not None and wide.long.block == 64) == bool(twin)
            assert generator.long is None  # no blocks of 256
            budget = (2 * 64 - 2) * 128 * 128  # 64's weights fit, 128's do not
            narrower = plan_conv(nn.Conv1d(128, 128, 11, padding=5), dtype, max_spectrum_values=budget)
            assert isinstance(narrower, BlockDFTConv1d) and narrower.block == 64
    # an ONNX graph runs PyTorch's transforms: blocks sized for them, and 2 bytes per budgeted value
    graph = plan_conv(nn.Conv1d(8, 8, 11, padding=5), torch.float32, compiled=False)
    assert isinstance(graph, BlockDFTConv1d) and graph.block == 32 and not graph.native
    assert isinstance(
        plan_conv(nn.Conv1d(256, 256, 11, padding=5), torch.float32, compiled=False), FastConv1d
    )
    assert isinstance(
        plan_conv(nn.Conv1d(256, 256, 11, padding=5), torch.bfloat16, compiled=False), BlockDFTConv1d
    )


@pytest.mark.skipif(not native.mix_available(), reason="the compiled mixing needs AVX2 and FMA")
def test_long_inputs_run_through_the_twin_in_longer_blocks():
    from koel.model.fast import LONG_INPUT

    torch.manual_seed(5)
    conv = nn.Conv1d(256, 256, 11, dilation=3, padding=15)
    planned = cast(BlockDFTConv1d, plan_conv(conv, torch.float32))
    assert planned.long is not None and planned.long.block == 2 * planned.block
    short = copy.deepcopy(planned)
    short.long = None
    for length in (LONG_INPUT - 1, LONG_INPUT):
        x = torch.randn(1, 256, length)
        with torch.no_grad():
            assert _rel(planned(x), conv(x)) < 2e-3  # float16 weights
        twin = length >= LONG_INPUT
        assert torch.equal(planned(x), (planned.long if twin else short)(x))
        assert torch.equal(planned(x), short(x)) != twin  # the blocks round differently


def test_accelerate_keeps_parameters_and_needs_folded_weights(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with pytest.raises(ValueError, match="fold weight norm"):
        accelerate(copy.deepcopy(tiny_model), "fp32")
    tiny_model.fold_weight_norm()
    folded = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    assert accelerate(tiny_model, "fp32") == torch.float32
    after = tiny_model.state_dict()
    assert set(after) == set(folded) and len(folded) < len(before)  # weight-norm pairs became weights
    assert all(torch.equal(after[k], folded[k]) for k in folded)
    assert all(isinstance(b, FastAdaINResBlock1) for b in tiny_model.decoder.generator.resblocks)
    lstms = [m for m in tiny_model.modules() if isinstance(m, nn.LSTM)]
    assert len(lstms) == 5 and all(isinstance(m, FastLSTM) for m in lstms) == native.mix_available()
    gen = tiny_model.decoder.generator  # upsamplers and conv_post in the kernel, same parameters
    compiled = [*gen.ups, gen.conv_post]
    assert (
        all(isinstance(m, (FastConvTranspose1d, AdoptedConv1d)) for m in compiled) == native.mix_available()
    )
    assert gen.conv_post.weight is not None and gen.conv_post.weight.device.type == "cpu"
    assert accelerate(tiny_model, "fp32") == torch.float32  # idempotent


def test_accelerated_model_matches_reference(tiny_model):
    tiny_model.fold_weight_norm()
    fast = copy.deepcopy(tiny_model)
    accelerate(fast, "fp32", half_weights=False)
    half = copy.deepcopy(tiny_model)  # float32 products on float16-stored weights (the default)
    accelerate(half, "fp32", half_weights=True)
    low = copy.deepcopy(tiny_model)
    accelerate(low, "bf16")
    torch.manual_seed(3)
    ids, style = _wrap(torch.randint(1, 170, (9,))), torch.randn(1, 32)
    durations = torch.randint(1, 5, (1, 11))
    ref = tiny_model.synthesize(ids, style, durations=durations)
    # the generator is compared on identical inputs through the spectrogram it predicts: the
    # waveform's phase integrates F0 over the utterance, so rounding moves it without changing the sound
    x = torch.randn(1, 32, 2 * int(durations.sum())) * 0.5
    with torch.no_grad():
        ref_spec = tiny_model.decoder.generator(x, style[:, :16], ref.f0)
    # float16 weights: 2^-11 relative each, against bf16's 2^-8
    for model, tol in ((fast, 1e-4), (half, 2e-3), (low, 5e-2)):
        out = model.synthesize(ids, style, durations=durations)
        assert out.audio.shape == ref.audio.shape
        assert _rel(out.f0, ref.f0) < tol and _rel(out.energy, ref.energy) < tol
        with torch.no_grad():
            spec = model.decoder.generator(x, style[:, :16], ref.f0)
        assert _rel(spec, ref_spec) < tol, f"generator error {_rel(spec, ref_spec)}"


def test_accelerated_batch_equals_one_at_a_time(tiny_model):
    tiny_model.fold_weight_norm()
    accelerate(tiny_model, "fp32")
    torch.manual_seed(1)
    seqs = [torch.randint(1, 170, (n,)) for n in (5, 13, 9)]
    styles = torch.randn(len(seqs), 32)
    ids = torch.zeros(len(seqs), max(len(q) for q in seqs) + 2, dtype=torch.long)
    for i, q in enumerate(seqs):
        ids[i, 1 : 1 + len(q)] = q
    batch = tiny_model.synthesize(ids, styles, lengths=torch.tensor([len(q) + 2 for q in seqs]))
    for i, q in enumerate(seqs):
        single = tiny_model.synthesize(_wrap(q), styles[i : i + 1])
        assert batch.item_durations(i).tolist() == single.item_durations(0).tolist()
        a, b = batch.item_audio(i), single.item_audio(0)
        err = (a - b).abs().max().item()
        assert err < 1e-3 * b.abs().max().item(), f"utterance {i}: max error {err}"


def test_fast_conv_runs_in_reduced_precision():
    conv = nn.Conv1d(8, 8, 3, padding=1)
    fast = FastConv1d(conv, torch.bfloat16)
    x = torch.randn(2, 8, 100)
    with torch.no_grad():
        out = fast(x)
        assert out.dtype == torch.bfloat16
        assert _rel(out, F.conv1d(x, conv.weight, conv.bias, padding=1)) < 2e-2


def test_concurrent_generator_equals_the_chain(tiny_model):
    from koel.model.fast import ConcurrentGenerator, branch_pool, set_concurrent_branches
    from koel.model.generator import Generator

    tiny_model.fold_weight_norm()
    accelerate(tiny_model, "fp32")
    gen = tiny_model.decoder.generator
    assert isinstance(gen, ConcurrentGenerator)
    torch.manual_seed(5)
    x, s, f0 = torch.randn(2, 32, 30), torch.randn(2, 16), torch.rand(2, 30) * 300
    lengths = torch.tensor([30, 21])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    enabled = set_concurrent_branches(True)  # off by default (slower on 2 cores), on here
    try:
        assert branch_pool() is not None
        with torch.no_grad():
            for f0_lengths in (None, lengths):
                concurrent = gen(x, s, f0, f0_lengths)
                chain = Generator.forward(gen, x, s, f0, f0_lengths)
                assert _rel(concurrent, chain) < 1e-5, f"lengths {f0_lengths}: {_rel(concurrent, chain)}"
        assert branch_pool().submit(torch.get_num_threads).result() == 1  # workers run single-threaded
        assert torch.get_num_threads() == 2
    finally:
        set_concurrent_branches(enabled)
        torch.set_num_threads(before)


def test_tiles_cover_the_utterance_and_one_tile_is_exact(tiny_model):
    from koel.model.fast import stream_tiles

    tiny_model.fold_weight_norm()
    accelerate(tiny_model, "fp32")
    torch.manual_seed(7)
    ids, style = _wrap(torch.randint(1, 170, (12,))), torch.randn(1, 32)
    ref = tiny_model.synthesize(ids, style)
    whole = stream_tiles(tiny_model, ids, style, first_frames=1 << 20)
    assert torch.equal(whole.durations, ref.durations[0])
    assert torch.allclose(torch.cat(list(whole.pieces)), ref.audio[0], atol=1e-5)
    tiles = stream_tiles(tiny_model, ids, style, first_frames=3, frames=5, margin=2, overlap=0)
    pieces = list(tiles.pieces)
    assert len(pieces[0]) == 3 * 300 and all(len(p) <= 5 * 300 for p in pieces[1:])
    assert sum(len(p) for p in pieces) == 600 * int(tiles.durations.sum())
    faded = list(stream_tiles(tiny_model, ids, style, first_frames=3, frames=5, margin=2, overlap=2).pieces)
    assert len(faded[0]) == 3 * 300 - 300  # the first edge's crossfade starts one frame early
    assert sum(len(p) for p in faded) == 600 * int(tiles.durations.sum())


def test_a_tile_prior_starts_the_tiles_statistics_from_a_whole_utterance(tiny_model):
    from koel.model.fast import TilePrior, stream_tiles, tile_prior

    tiny_model.fold_weight_norm()
    accelerate(tiny_model, "fp32")
    torch.manual_seed(7)
    ids, style = _wrap(torch.randint(1, 170, (12,))), torch.randn(1, 32)
    ref = tiny_model.synthesize(ids, style).audio[0]
    prior = tile_prior(tiny_model, ids, style)
    fused = [name for name, m in tiny_model.decoder.named_modules() if isinstance(m, AdaIN1d)]
    assert sorted(prior.stats) == sorted(fused) and any(n.startswith("generator.") for n in fused)
    assert all(m.dtype == m2.dtype == torch.float64 and c > 0 for m, m2, c in prior.stats.values())
    prior.check(tiny_model.decoder)
    with pytest.raises(ValueError, match="layers differ"):
        TilePrior(dict(list(prior.stats.items())[1:])).check(tiny_model.decoder)
    name, (mean, m2, count) = next(iter(prior.stats.items()))
    with pytest.raises(ValueError, match="shape"):
        TilePrior({**prior.stats, name: (mean[:, :-1], m2[:, :-1], count)}).check(tiny_model.decoder)

    def tiled(p: TilePrior | None, first: int = 3) -> torch.Tensor:
        kwargs = {"first_frames": first, "frames": 5, "margin": 8, "overlap": 0}
        return torch.cat(list(stream_tiles(tiny_model, ids, style, prior=p, **kwargs).pieces))

    plain, head = tiled(None), slice(0, 3 * 300)  # head: the first tile's audio
    # the utterance's own statistics, counted as a thousand utterances: every tile normalises about
    # as the untiled generator does (measured: first tile 0.4% off, against 48% without a prior)
    own = tiled(TilePrior(prior.stats, 1000.0))
    assert _rel(own[head], ref[head]) < 0.05 * _rel(plain[head], ref[head])
    assert _rel(own, ref) < 0.3 * _rel(plain, ref), (_rel(own, ref), _rel(plain, ref))
    once = tiled(prior)  # counted once: in between (26%)
    assert _rel(own[head], ref[head]) < _rel(once[head], ref[head]) < 0.7 * _rel(plain[head], ref[head])
    assert torch.equal(tiled(TilePrior(prior.stats, 0.0)), plain)  # weight 0: no prior
    restored = TilePrior.from_state(copy.deepcopy(prior.state()))
    assert torch.equal(tiled(restored), once)
    # with a prior the decoder runs first on the first tile's window only, then on the first two
    # tiles' window, then on the whole utterance
    lengths: list[int] = []
    hook = tiny_model.decoder.encode.register_forward_hook(lambda m, args, out: lengths.append(out.shape[-1]))
    try:
        tiled(prior)
        tiled(None)
    finally:
        hook.remove()
    frames = ref.shape[-1] // 600  # 40 Hz
    assert len(lengths) == 4 and lengths[0] < lengths[1] < frames // 4, lengths
    assert lengths[2:] == [frames, frames], lengths
    assert torch.allclose(tiled(prior, first=1 << 20), ref, atol=1e-5)  # one tile: the untiled computation
    with pytest.raises(ValueError, match="differ in length"):
        TilePrior.from_state({**prior.state(), "counts": []})


def test_a_tiles_last_stage_runs_only_on_the_tile_and_its_reach(tiny_model):
    from koel.model.fast import TilePrior, stream_tiles, tile_prior

    tiny_model.fold_weight_norm()
    accelerate(tiny_model, "fp32")
    torch.manual_seed(7)
    ids, style = _wrap(torch.randint(1, 170, (12,))), torch.randn(1, 32)
    gen = tiny_model.decoder.generator
    # statistics pinned to the utterance's own (a prior counted a billion times), so that the
    # trimmed and the untrimmed last stage normalise alike and must agree to rounding
    pinned = TilePrior(tile_prior(tiny_model, ids, style).stats, 1e9)
    widths: list[tuple[int, int]] = []
    first, last = gen.resblocks[0], gen.resblocks[-1]
    hooks = [
        m.register_forward_hook(lambda m, args, out: widths.append((id(m), args[0].shape[-1])))
        for m in (first, last)
    ]

    def tiled(trim: bool) -> torch.Tensor:
        kwargs = {"first_frames": 3, "frames": 5, "margin": 8, "overlap": 2, "prior": pinned, "trim": trim}
        return torch.cat(list(stream_tiles(tiny_model, ids, style, **kwargs).pieces))

    try:
        whole, cut = tiled(False), tiled(True)
    finally:
        for h in hooks:
            h.remove()
    # close, though not to float rounding: this random model feeds its noise branch near-constant
    # channels, whose tiny variance scales up the rounding of their centring (measured 3e-4; the real
    # model agrees to 1e-6, tests/pipeline); the prior counted once moves the audio by about 0.5
    assert _rel(cut, whole) < 2e-3, _rel(cut, whole)
    reach = gen.last_stage_reach()
    assert 1 <= reach <= 8
    rates = gen.ups_rates()
    untrimmed, trimmed = widths[: len(widths) // 2], widths[len(widths) // 2 :]
    stage = {id(first): rates[0], id(last): rates[0] * rates[1]}  # steps per frame at each resblock
    frames_of = [[w // stage[m] for m, w in run if m == id(last)] for run in (untrimmed, trimmed)]
    assert [w // stage[m] for m, w in untrimmed if m == id(first)] == [
        w // stage[m] for m, w in trimmed if m == id(first)
    ]
    # the first tile (3 frames) has 8 frames of context on the right: untrimmed its last stage runs
    # on all 11 frames; trimmed on 3, the crossfade's frame and the stage's reach
    assert frames_of[0][0] == 11 and frames_of[1][0] == 3 + 1 + reach
    assert all(t < u for t, u in zip(frames_of[1], frames_of[0], strict=True) if u > 5 + 2 + 2 * reach)
    x = torch.randn(1, gen.ups[0].in_channels, 6)
    har = gen.harmonic_features(torch.full((1, 6), 120.0))
    with pytest.raises(ValueError, match="within"):
        gen(x, style[:, :16], None, har=har, last_stage=(4, 7))
    with pytest.raises(ValueError, match="unpadded"):
        gen(x, style[:, :16], None, torch.tensor([6]), har=har, last_stage=(0, 3))


def test_tile_bounds_cut_the_rest_into_equal_tiles():
    from koel.model.fast import tile_bounds

    assert tile_bounds(10, 3, 4) == [0, 3, 6, 10]  # a first tile, then 7 frames in two tiles of <= 4
    assert tile_bounds(1000, 400, 400) == [0, 333, 666, 1000]  # first == frames: equal tiles
    assert tile_bounds(850, 400, 400) == [0, 283, 566, 850]  # no 50-frame sliver at the end
    assert tile_bounds(850, 500, 400) == [0, 500, 850]  # a first tile longer than the rest
    assert tile_bounds(1000, 300, 400) == [0, 300, 650, 1000]
    assert tile_bounds(300, 400, 400) == [0, 300]
    assert tile_bounds(450, 200, 200, whole=400) == [0, 150, 300, 450]
    assert tile_bounds(400, 200, 200, whole=400) == [0, 400]  # short enough to run whole
    # growing tiles for streaming: 40, 80, 160, then the rest in equal tiles of at most 200
    grown = tile_bounds(2000, 40, 200, growth=2.0)
    assert grown[:4] == [0, 40, 120, 280] and grown[-1] == 2000
    sizes = [b - a for a, b in itertools.pairwise(grown[3:])]
    assert max(sizes) <= 200 and max(sizes) - min(sizes) <= 1
    assert tile_bounds(100, 40, 200, growth=2.0) == [0, 40, 100]
    for n in range(1, 700, 7):
        for args in ((40, 200, 2.0), (200, 200, 1.0), (3, 50, 1.5), (90, 50, 1.0)):
            b = tile_bounds(n, *args)
            assert (
                b[0] == 0 and b[-1] == n and all(0 < y - x <= max(args[:2]) for x, y in itertools.pairwise(b))
            )
    with pytest.raises(ValueError, match="positive"):
        tile_bounds(10, 0, 4)


class _PointwiseGenerator:
    """A generator whose output at each step depends on that step only: tiling must reproduce it
    exactly, its last stage cut to a tile (``last_stage``) or not."""

    hop = 5

    def __call__(self, x, s, f0, har=None, last_stage=None):
        if last_stage is not None:
            per = (har.shape[-1] - 1) // x.shape[-1]
            har = har[..., per * last_stage[0] : per * last_stage[1] + 1]
        return har * (1 + x.mean())  # x is constant, so every tile sees the same factor

    def last_stage_reach(self):
        return 1

    def spectrogram_to_audio(self, spec):
        return spec[:, 0, :-1].repeat_interleave(self.hop, dim=-1)


@pytest.mark.parametrize("overlap", [0, 2, 8])
def test_tiles_crossfade_back_to_the_untiled_signal(overlap):
    from koel.model.fast import generate_tiles, tile_bounds

    n, per = 57, 60
    x = torch.ones(1, 4, n)
    har = torch.sin(torch.arange(per * n + 1, dtype=torch.float32) * 0.013).reshape(1, 1, -1).repeat(1, 3, 1)
    gen = _PointwiseGenerator()
    whole = torch.cat(list(generate_tiles(gen, x, None, har, [0, n], margin=8, overlap=overlap)))
    expected = gen.spectrogram_to_audio(har * 2)[0]
    assert torch.equal(whole, expected)
    bounds = tile_bounds(n, 7, 12)
    for trim in (True, False):
        pieces = list(generate_tiles(gen, x, None, har, bounds, margin=8, overlap=overlap, trim=trim))
        assert len(pieces) == len(bounds) - 1
        assert torch.allclose(torch.cat(pieces), expected, atol=1e-6)


def test_fixed_width_windows_give_every_tile_the_same_shape():
    from koel.model.fast import generate_tiles, tile_bounds

    n, per = 95, 60
    x = torch.ones(1, 4, n)
    har = torch.cos(torch.arange(per * n + 1, dtype=torch.float32) * 0.021).reshape(1, 1, -1).repeat(1, 3, 1)
    widths = []

    class Recording(_PointwiseGenerator):
        def __call__(self, x, s, f0, har=None, last_stage=None):
            widths.append((x.shape[-1], har.shape[-1], last_stage and last_stage[1] - last_stage[0]))
            return super().__call__(x, s, f0, har, last_stage)

    gen = Recording()
    bounds = tile_bounds(n, 20, 20)
    assert len(bounds) == 6  # five tiles of 19 frames
    pieces = list(generate_tiles(gen, x, None, har, bounds, margin=4, overlap=4, width=28, trim=False))
    assert widths == [(28, 28 * per + 1, None)] * 5
    assert torch.allclose(torch.cat(pieces), gen.spectrogram_to_audio(har * 2)[0], atol=1e-6)
    # the last stage cut to the tile, its crossfades (2 frames each side) and its reach (1): 19 + 6
    widths.clear()
    pieces = list(generate_tiles(gen, x, None, har, bounds, margin=4, overlap=4, width=28, trim=True))
    assert widths == [(28, 28 * per + 1, 25)] * 5
    assert torch.allclose(torch.cat(pieces), gen.spectrogram_to_audio(har * 2)[0], atol=1e-6)
    with pytest.raises(ValueError, match="narrower"):
        next(generate_tiles(gen, x, None, har, bounds, margin=4, overlap=4, width=26))


def test_tile_overlap_must_fit_the_margin():
    from koel.model.fast import generate_tiles

    with pytest.raises(ValueError, match="overlap"):
        next(
            generate_tiles(
                _PointwiseGenerator(),
                torch.ones(1, 1, 9),
                None,
                torch.ones(1, 1, 541),
                [0, 9],
                margin=2,
                overlap=4,
            )
        )


def test_tiles_refuse_batches_and_bad_sizes(tiny_model):
    from koel.model.fast import stream_tiles

    tiny_model.fold_weight_norm()
    ids = torch.randint(1, 170, (2, 6))
    with pytest.raises(ValueError, match="one utterance"):
        stream_tiles(tiny_model, ids, torch.randn(2, 32))
    with pytest.raises(ValueError, match="positive"):
        stream_tiles(tiny_model, ids[:1], torch.randn(1, 32), first_frames=0)


def test_running_statistics_normalise_a_tile_over_everything_so_far():
    from koel.model.fast import _RUNNING_STATS, adain_snake
    from koel.model.layers import AdaIN1d

    torch.manual_seed(5)
    norm = AdaIN1d(16, 8)
    s, alpha = torch.randn(1, 16), torch.rand(1, 8, 1) + 0.5
    # a large mean next to a small spread: the case where one-pass variance formulas lose digits
    x = torch.randn(1, 8, 300) * 0.05 + 40 * torch.randn(1, 8, 1)
    whole = adain_snake(x, norm, s, alpha)
    token = _RUNNING_STATS.set({})
    try:
        pieces = [adain_snake(x[..., a:b], norm, s, alpha) for a, b in ((0, 70), (70, 180), (180, 300))]
    finally:
        _RUNNING_STATS.reset(token)
    # each piece saw the statistics of everything up to its end; the last saw the whole span
    assert torch.allclose(pieces[-1], whole[..., 180:], atol=1e-3, rtol=1e-3)
    upto = adain_snake(x[..., :180], norm, s, alpha)
    assert torch.allclose(pieces[1], upto[..., 70:], atol=1e-3, rtol=1e-3)
    assert torch.allclose(pieces[0], adain_snake(x[..., :70], norm, s, alpha), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(pieces[0], whole[..., :70], atol=1e-2)  # the first piece saw only itself


def test_tiles_take_uncentred_input_and_project_the_style_once():
    from koel.model.fast import _RUNNING_STATS, StyleProjections, _kernel_affine, adain_affine

    torch.manual_seed(6)
    norm = AdaIN1d(16, 8)
    s = torch.randn(1, 16)
    x = torch.randn(1, 8, 200) * 0.05 + 30 * torch.randn(1, 8, 1)  # a large mean next to a small spread
    spans = ((0, 60), (60, 200))
    with torch.no_grad():
        expected = [adain_affine(x[..., :b], norm, s) for _, b in spans]  # everything so far, one span
        projections = StyleProjections([norm])
        products = []
        addmm = torch.addmm
        with patch.object(torch, "addmm", lambda *a, **k: products.append(1) or addmm(*a, **k)):
            token = _RUNNING_STATS.set({})
            try:
                tiles = [_kernel_affine(x[..., a:b], norm, s, torch.float32) for a, b in spans]
            finally:
                _RUNNING_STATS.reset(token)
    assert len(products) == 1 and projections._last is not None  # the style's projection, once
    for (a, b), (source, center, scale, shift), (y, y_scale, y_shift) in zip(
        spans, tiles, expected, strict=True
    ):
        assert torch.equal(source, x[..., a:b])  # not centred: the kernel subtracts center as it reads
        assert torch.allclose((source - center) * scale + shift, (y * y_scale + y_shift)[..., a:], atol=1e-4)


def test_style_projections_are_each_layers_own_product_computed_once_per_vector(tiny_model):
    from koel.model.fast import StyleProjections

    tiny_model.fold_weight_norm()
    accelerate(tiny_model, "fp32")
    for group in (tiny_model.decoder, tiny_model.predictor):
        norms = [m for m in group.modules() if isinstance(m, AdaIN1d)]
        projections = norms[0].__dict__["style_projections"][0]
        assert isinstance(projections, StyleProjections)
        # every layer's fc is a view of the group's matrix: nothing is held twice
        base = projections.weight.untyped_storage().data_ptr()
        assert all(n.fc.weight.untyped_storage().data_ptr() == base for n in norms)
        assert all(n.__dict__["style_projections"][0] is projections for n in norms)
        s = torch.randn(2, norms[0].fc.in_features)
        with torch.no_grad():
            for norm in norms:
                gamma, beta = norm.style(s)
                want_gamma, want_beta = norm.fc(s).unsqueeze(-1).chunk(2, dim=1)
                assert gamma.shape == want_gamma.shape == (2, norm.fc.out_features // 2, 1)
                assert torch.allclose(gamma, want_gamma, atol=1e-6) and torch.allclose(
                    beta, want_beta, atol=1e-6
                )
            product = projections._last[2]
            norms[-1].style(s)
            assert projections._last[2] is product  # the same vector: no new product
            s.mul_(-1)  # changed in place: a new vector
            gamma, _ = norms[0].style(s)
            assert projections._last[2] is not product
            assert torch.allclose(gamma, norms[0].fc(s).unsqueeze(-1).chunk(2, dim=1)[0], atol=1e-6)
    # a deep copy keeps working on its own layers
    twin = copy.deepcopy(tiny_model)
    norm = next(m for m in twin.decoder.modules() if isinstance(m, AdaIN1d))
    assert norm.__dict__["style_projections"][0] is not projections
    s = torch.randn(1, norm.fc.in_features)
    with torch.no_grad():
        assert torch.allclose(norm.style(s)[1], norm.fc(s).unsqueeze(-1).chunk(2, dim=1)[1], atol=1e-6)


def test_a_streams_first_tile_reads_the_harmonic_source_of_a_prefix(tiny_model):
    from koel.model.fast import HARMONIC_MARGIN, _HarmonicSource

    gen = tiny_model.decoder.generator
    torch.manual_seed(3)
    f0 = (torch.rand(1, 120) * 150 + 80) * (torch.rand(1, 120) > 0.2)  # voiced and unvoiced frames
    per = math.prod(gen.ups_rates())
    with torch.no_grad():
        whole = gen.harmonic_features(f0)
    calls = []
    features = gen.harmonic_features
    with patch.object(gen, "harmonic_features", lambda f: calls.append(f.shape[-1]) or features(f)):
        source = _HarmonicSource(gen, f0)
        first = source(40)
        assert calls == [40 + HARMONIC_MARGIN]  # a prefix only
        assert torch.allclose(first[..., : per * 40 + 1], whole[..., : per * 40 + 1], atol=1e-6)
        assert torch.equal(source(76), source(30))  # then the whole utterance, once
        assert calls == [40 + HARMONIC_MARGIN, 120]
    assert torch.allclose(source(76), whole, atol=1e-6)
    with patch.object(gen, "harmonic_features", lambda f: calls.append(f.shape[-1]) or features(f)):
        assert _HarmonicSource(gen, f0)(119).shape == whole.shape  # no prefix short of the end
    assert calls[-1] == 120


def test_accelerate_runs_the_plain_stride_1_convolutions_in_the_compiled_kernel(tiny_model):
    tiny_model.fold_weight_norm()
    reference = copy.deepcopy(tiny_model)
    accelerate(tiny_model, "fp32")
    adopted = {n for n, m in tiny_model.named_modules() if isinstance(m, AdoptedConv1d)}
    expected = {
        *(f"text_encoder.cnn.{i}.0" for i in range(len(tiny_model.text_encoder.cnn))),
        "decoder.asr_res.0",
        "predictor.F0_proj",
        "predictor.N_proj",
        "decoder.generator.conv_post",
        f"decoder.generator.noise_convs.{len(tiny_model.decoder.generator.noise_convs) - 1}",
    }
    assert adopted == (expected if native.mix_available() else set())
    # strided ones stay with PyTorch, and the fused blocks' own (unused) originals are not packed again
    assert type(tiny_model.decoder.generator.noise_convs[0]) is nn.Conv1d
    assert all(type(c) is nn.Conv1d for b in tiny_model.decoder.generator.resblocks for c in b.convs1)
    ids = torch.randint(1, 100, (1, 12))
    with torch.no_grad():
        got = tiny_model.text_encoder(ids, None, None)
        want = reference.text_encoder(ids, None, None)
    assert _rel(got, want) < 1e-3, _rel(got, want)
