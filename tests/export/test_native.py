"""koel's compiled block-DFT kernel (koel.model.native) against torch.fft, and its fallbacks."""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koel.model import native
from koel.model.fast import BlockDFTConv1d, plan_conv


@pytest.fixture
def fresh_library() -> Iterator[None]:
    """library() rebuilt from the environment of the test, and again afterwards."""
    native.library.cache_clear()
    yield
    native.library.cache_clear()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _blocks(length: int, dilation: int, step: int) -> int:
    per_phase = -(-length // dilation)
    return -(-per_phase // step)


def _reference_spectra(
    x: torch.Tensor, n: int, step: int, dilation: int, blocks: int, left: int
) -> torch.Tensor:
    _, channels, length = x.shape
    total = dilation * (blocks * step + n)
    padded = F.pad(x.double(), (left, total - length - left))
    index = torch.arange(dilation)[:, None, None] + dilation * (
        torch.arange(blocks)[:, None] * step + torch.arange(n)[None, :]
    )  # [d, blocks, n]
    spectrum = torch.fft.rfft(padded[:, :, index], dim=-1)  # [B, C, d, blocks, n/2 + 1]
    rows = [spectrum[..., f].imag if part else spectrum[..., f].real for f, part in native.spectrum_rows(n)]
    return torch.stack(rows).permute(0, 2, 1, 3, 4).reshape(n, channels, -1)


def _reference_signal(
    spectra: torch.Tensor, batch: int, length: int, step: int, dilation: int
) -> torch.Tensor:
    n, channels, _ = spectra.shape
    full = torch.zeros(n // 2 + 1, *spectra.shape[1:], dtype=torch.complex128)
    for row, (f, part) in enumerate(native.spectrum_rows(n)):
        full[f] += spectra[row].double() * (1j if part else 1)
    blocks = torch.fft.irfft(full.permute(1, 2, 0), n=n, dim=-1)[..., :step]  # [C, B d blocks, step]
    out = blocks.reshape(channels, batch, dilation, -1).transpose(2, 3).reshape(channels, batch, -1)
    return out[..., :length].transpose(0, 1)


needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: the kernel cannot be built")


def test_kernel_is_built_where_a_compiler_exists():
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine")
    assert native.available()


@needs_native
@pytest.mark.parametrize(
    ("batch", "channels", "length", "dilation", "taps", "n"),
    [
        (1, 5, 37, 1, 11, 32),
        (2, 3, 1001, 3, 11, 32),
        (1, 4, 500, 5, 7, 64),
        (1, 2, 3, 1, 3, 16),
        (3, 4, 777, 1, 3, 32),
        (1, 3, 5000, 5, 11, 128),
        (1, 2, 10, 5, 11, 32),  # shorter than one dilated block
        (2, 17, 2048, 1, 7, 64),  # whole groups of 16 blocks, the vectorised path
        (1, 3, 1000, 1, 11, 64),  # 19 blocks: whole groups of 8 and a partial one; steps of 54 = 6 x 8 + 6
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spectra_dtype", [torch.bfloat16, torch.float32])
def test_analysis_and_synthesis_match_torch_fft(
    batch, channels, length, dilation, taps, n, dtype, spectra_dtype
):
    torch.manual_seed(length)
    step, left = n - taps + 1, dilation * (taps - 1) // 2
    blocks = _blocks(length, dilation, step)
    x = torch.randn(batch, channels, length).to(dtype)
    spectra = native.analysis(x, n, step, dilation, blocks, left, dtype=spectra_dtype)
    assert spectra.shape == (n, channels, batch * dilation * blocks) and spectra.dtype == spectra_dtype
    bound = 4e-3 if spectra_dtype == torch.bfloat16 else 1e-6  # bf16 rounding / float32 FFT
    assert _rel(spectra, _reference_spectra(x, n, step, dilation, blocks, left)) < bound
    mixed = torch.randn_like(spectra, dtype=torch.float32).to(spectra_dtype)
    bias = torch.randn(channels)
    out = native.synthesis(mixed, batch, length, step, dilation, blocks, bias)
    expected = _reference_signal(mixed, batch, length, step, dilation) + bias[:, None].double()
    assert out.shape == (batch, channels, length) and out.dtype == torch.float32
    assert _rel(out, expected) < 1e-6
    # added into a given tensor instead (the residual stream)
    base = torch.randn(batch, channels, length)
    into = base.clone()
    assert native.synthesis(mixed, batch, length, step, dilation, blocks, bias, out=into) is into
    assert _rel(into, expected + base.double()) < 1e-6


@needs_native
def test_kernel_rejects_what_it_cannot_do():
    x = torch.randn(1, 4, 100)
    with pytest.raises(ValueError, match="unsupported block DFT"):
        native.analysis(x, 48, 38, 1, 3, 5)  # not a power of two
    with pytest.raises(ValueError, match="float32/bfloat16"):
        native.analysis(x.double(), 32, 22, 1, 5, 5)
    spectra = native.analysis(x, 32, 22, 1, 5, 5)
    with pytest.raises(ValueError, match="cannot cover"):
        native.synthesis(spectra, 1, 200, 22, 1, 5, None)
    with pytest.raises(ValueError, match="bias"):
        native.synthesis(spectra, 1, 100, 22, 1, 5, torch.zeros(3))
    with pytest.raises(ValueError, match="bfloat16 or float32 spectra"):
        native.synthesis(spectra.double(), 1, 100, 22, 1, 5, None)
    with pytest.raises(ValueError, match="spectra's dtype"):
        native.analysis(x, 32, 22, 1, 5, 5, dtype=torch.float16)
    with pytest.raises(ValueError, match="output dtype"):
        native.snake(
            x,
            (torch.zeros(1, 4, 1), torch.ones(1, 4, 1), torch.zeros(1, 4, 1), torch.ones(1, 4, 1)),
            torch.float16,
        )


def test_switched_off_the_convolution_uses_pytorch_transforms(monkeypatch, fresh_library):
    monkeypatch.setenv("KOEL_NATIVE", "0")
    assert native.library() is None
    conv = nn.Conv1d(8, 8, 11, dilation=3, padding=15)
    planned = plan_conv(conv, torch.bfloat16)
    assert isinstance(planned, BlockDFTConv1d) and not planned.native and planned.block == 32
    x = torch.randn(2, 8, 300)
    with torch.no_grad():
        assert _rel(planned(x), conv(x)) < 2e-2
    with pytest.raises(RuntimeError, match="not available"):
        native.analysis(x, 32, 22, 1, 14, 5)


def test_a_failing_compiler_falls_back_with_a_warning(monkeypatch, tmp_path, fresh_library, caplog):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    monkeypatch.setenv("KOEL_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="koel.model.native"):
        assert native.library() is None
    assert "cannot compile" in caplog.text
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    native.library.cache_clear()
    assert native.library() is None


def test_a_build_without_the_cpu_flags_says_so(monkeypatch, tmp_path, fresh_library, caplog):
    real = shutil.which("cc")
    if real is None:
        pytest.skip("no C compiler on this machine")
    picky = tmp_path / "picky-cc"  # refuses -march=native, compiles everything else
    picky.write_text(
        '#!/bin/sh\nfor a in "$@"; do [ "$a" = -march=native ] && { echo "no native" >&2; exit 1; }; done\n'
        f'exec {real} "$@"\n'
    )
    picky.chmod(0o755)
    monkeypatch.setenv("CC", str(picky))
    monkeypatch.setenv("KOEL_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="koel.model.native"):
        assert native.library() is not None
    assert "without -march=native" in caplog.text and "slower" in caplog.text


@needs_native
@pytest.mark.parametrize(("dilation", "length"), [(1, 2000), (3, 2000), (1, 40)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_activation_on_the_way_in_and_residual_added_on_the_way_out(dilation, length, dtype):
    """conv(Snake(x * scale + shift)) + residual in one kernel pass == the same steps in PyTorch."""
    torch.manual_seed(dilation)
    channels, taps = 6, 11
    conv = nn.Conv1d(channels, channels, taps, dilation=dilation, padding=dilation * (taps - 1) // 2)
    block = BlockDFTConv1d(conv, dtype, 64)
    assert block.native
    x = 3 * torch.randn(2, channels, length)
    center, scale, shift = (
        torch.randn(2, channels, 1),
        torch.rand(2, channels, 1) + 0.5,
        torch.randn(2, channels, 1),
    )
    alpha = torch.rand(1, channels, 1) + 0.2
    residual = torch.randn(2, channels, length)
    with torch.no_grad():
        y = (x - center) * scale + shift
        expected = conv(y + torch.sin(alpha * y) ** 2 / alpha) + residual
        out = block.fused(x, (center, scale, shift, alpha), residual.clone())
    assert _rel(out, expected) < (2e-2 if dtype == torch.bfloat16 else 1e-5)  # bf16 mixing / float32
    with torch.no_grad():  # the activation itself in float32, against torch's sine (cosine argument ~±100)
        plain = block.fused(y + torch.sin(alpha * y) ** 2 / alpha)
        fused = block.fused(x, (center, scale, shift, alpha))
    assert _rel(fused, plain) < 2e-4  # a few spectrum values round the other way in bf16


@needs_native
@pytest.mark.parametrize("dilation", [1, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activation_on_the_way_in_is_the_snake_kernel_bit_for_bit(dilation, dtype):
    """Every sample is activated once with the same arithmetic, whether read straight into its phase
    (undilated), from the activated row (dilated: the row is activated first, then gathered) or as
    one of a row's last few: the spectra equal those of the separately activated signal exactly."""
    torch.manual_seed(dilation)
    channels, length, n, taps = 5, 1001, 64, 11
    step, left = n - taps + 1, dilation * (taps - 1) // 2
    blocks = _blocks(length, dilation, step)
    x = (3 * torch.randn(2, channels, length)).to(dtype)
    activation = (
        torch.randn(2, channels, 1),
        torch.rand(2, channels, 1) + 0.5,
        torch.randn(2, channels, 1),
        torch.rand(1, channels, 1) + 0.2,
    )
    fused = native.analysis(x, n, step, dilation, blocks, left, activation, torch.float32)
    activated = native.snake(x, activation, torch.float32)
    assert torch.equal(
        fused, native.analysis(activated, n, step, dilation, blocks, left, None, torch.float32)
    )


@needs_native
def test_row_stats_are_exact_when_the_mean_dwarfs_the_spread():
    torch.manual_seed(0)
    spread = torch.tensor([1e-3, 1.0, 10.0, 1e-2, 3.0])[:, None]
    offset = torch.tensor([1000.0, 0.0, -5.0, 30.0, 1e4])[:, None]
    x = torch.randn(2, 5, 3001) * spread + offset
    mean, var = native.row_stats(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=-1, keepdim=True, correction=0)
    assert mean.shape == var.shape == (2, 5, 1)
    assert float(((var.double() - ref_var).abs() / ref_var).max()) < 1e-3
    # the mean to float32's resolution (two ulps), not better: the reference norm has the same limit
    assert bool(((mean.double() - ref_mean).abs() <= ref_mean.abs() * 2.0**-22 + 1e-4 * ref_var.sqrt()).all())
    with pytest.raises(ValueError, match="float32"):
        native.row_stats(x.double())


@needs_native
@pytest.mark.parametrize("length", [1, 17, 3001])
def test_row_stats_read_bf16_rows_as_they_are(length):
    torch.manual_seed(length)
    x = (torch.randn(3, 4, length) * 2 + 5).bfloat16()  # a direct convolution's output
    mean, var = native.row_stats(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=-1, keepdim=True, correction=0)
    assert mean.dtype == var.dtype == torch.float32
    assert torch.allclose(mean.double(), ref_mean, rtol=1e-6, atol=1e-6)
    assert torch.allclose(var.double(), ref_var, rtol=1e-4, atol=1e-6)


def _running_affine_in_torch(x, gamma, beta, eps, previous):
    """koel.model.fast's running AdaIN statistics as PyTorch tensor operations (the kernel's spec)."""
    count = x.shape[-1]
    local, var = native.row_stats(x)
    m2 = var.double() * count
    local64 = mean64 = local.double()
    if previous is not None:
        prev_mean, prev_m2, prev_count = previous
        total = prev_count + count
        delta = mean64 - prev_mean
        mean64 = prev_mean + delta * (count / total)
        m2 = prev_m2 + m2 + delta.square() * (prev_count * count / total)
        count = total
    scale = (1 + gamma) * torch.rsqrt((m2 / count).float() + eps)
    return (local, scale, beta - (mean64 - local64).float() * scale), (mean64, m2, count)


@needs_native
@pytest.mark.parametrize("channels,length", [(8, 1), (128, 40), (256, 1861), (1090, 33)])
@pytest.mark.parametrize("previous_count", [None, 37, 412.5, 1e6])
@pytest.mark.parametrize("bf16", [False, True])
def test_running_affine_is_the_torch_formulas_bit_for_bit(channels, length, previous_count, bf16):
    torch.manual_seed(channels + length)
    # spreads from tiny to large next to large means, and constant rows (an unvoiced source)
    x = torch.randn(1, channels, length) * torch.rand(1, channels, 1) * 10 + torch.randn(1, channels, 1) * 50
    x[:, :3] = 2.5
    x = x.bfloat16() if bf16 else x
    gamma, beta = torch.randn(1, channels, 1), torch.randn(1, channels, 1)
    previous = None
    if previous_count is not None:
        previous = (
            torch.randn(1, channels, 1, dtype=torch.float64) * 30,
            torch.rand(1, channels, 1, dtype=torch.float64) * 1e4,
            previous_count,
        )
    affine, stats = native.running_affine(x, gamma, beta, 1e-5, previous)
    ref_affine, ref_stats = _running_affine_in_torch(x, gamma, beta, 1e-5, previous)
    for got, want in zip((*affine, *stats[:2]), (*ref_affine, *ref_stats[:2]), strict=True):
        assert got.shape == (1, channels, 1) and got.dtype == want.dtype
        assert torch.equal(got, want)
    assert stats[2] == ref_stats[2] == (previous_count or 0) + length


@needs_native
def test_running_affine_refuses_what_it_cannot_read():
    gamma = beta = torch.zeros(1, 4, 1)
    with pytest.raises(ValueError, match="float32/bfloat16"):
        native.running_affine(torch.zeros(1, 4, 5, dtype=torch.float64), gamma, beta, 1e-5)
    with pytest.raises(ValueError, match=r"\[B, C, L>0\]"):
        native.running_affine(torch.zeros(1, 4, 0), gamma, beta, 1e-5)
    with pytest.raises(ValueError, match=r"\[B, C, L>0\]"):
        native.running_affine(torch.zeros(4, 5), gamma, beta, 1e-5)


@needs_native
@pytest.mark.parametrize("length", [1, 15, 16, 1001])
def test_snake_pass_matches_torch(length):
    torch.manual_seed(length)
    x = 4 * torch.randn(2, 3, length)
    center, scale, shift = torch.randn(2, 3, 1), torch.rand(2, 3, 1) + 0.5, torch.randn(2, 3, 1)
    alpha = torch.rand(1, 3, 1) + 0.2
    y = (x - center) * scale + shift
    expected = y + torch.sin(alpha * y) ** 2 / alpha
    out = native.snake(x, (center, scale, shift, alpha))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert float(((out.float() - expected).abs() / (expected.abs() + 1e-3)).max()) < 8e-3  # bf16 rounding
    full = native.snake(x, (center, scale, shift, alpha), torch.float32)
    assert full.dtype == torch.float32 and full.shape == x.shape
    assert float(((full - expected).abs() / (expected.abs() + 1e-3)).max()) < 2e-5  # the kernel's cosine
    # bf16 input is read as it is: the same as converting it to float32 first
    low = x.bfloat16()
    assert torch.equal(
        native.snake(low, (center, scale, shift, alpha)),
        native.snake(low.float(), (center, scale, shift, alpha)),
    )


@needs_native
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 17), (1, 128, 5000)])
def test_add_bf16_adds_in_one_pass(shape):
    torch.manual_seed(sum(shape))
    x, t = torch.randn(shape), torch.randn(shape).bfloat16()
    expected = x + t.float()
    assert torch.equal(native.add_bf16(x, t), expected)
    same = x.clone()
    assert native.add_bf16(same, t, out=same) is same and torch.equal(same, expected)  # in place
    with pytest.raises(ValueError, match="float32 x and bfloat16 t"):
        native.add_bf16(x, t.float())
    with pytest.raises(ValueError, match="out must be"):
        native.add_bf16(x, t, out=torch.empty(shape, dtype=torch.bfloat16))


def _one_and_several_threads(fn, *args):
    """fn(*args) with torch's thread count at 1, then at 2 or more (restored after)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = fn(*args)
        torch.set_num_threads(max(2, before))
        several = fn(*args)
    finally:
        torch.set_num_threads(before)
    return single, several


@needs_native
def test_results_do_not_depend_on_the_thread_count_or_calling_thread():
    from concurrent.futures import ThreadPoolExecutor

    x = torch.randn(1, 8, 3000)
    single, several = _one_and_several_threads(native.analysis, x, 64, 54, 3, 19, 15)
    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(native.analysis, x, 64, 54, 3, 19, 15).result()
    assert torch.equal(single, several) and torch.equal(single, worker)


needs_mix = pytest.mark.skipif(not native.mix_available(), reason="the compiled mixing needs AVX2 and FMA")


@needs_mix
@pytest.mark.parametrize(
    ("groups", "m", "k", "n"),
    [
        (1, 1, 1, 1),
        (2, 7, 5, 3),  # a partial row tile and a partial column strip
        (3, 12, 24, 16),  # whole tiles and strips
        (31, 13, 10, 33),
        (2, 20, 300, 400),  # K too deep for one panel of 400 columns: several panels
    ],
)
def test_mix_matches_bmm(groups, m, k, n):
    torch.manual_seed(groups * m + n)
    w, x = torch.randn(groups, m, k), torch.randn(groups, k, n)
    packed = native.pack_mix_weights(w)
    assert torch.equal(native.unpack_mix_weights(packed, m), w)
    expected = torch.bmm(w.double(), x.double())
    assert _rel(native.mix(x, packed, m), expected) < 1e-6
    # into a view of a larger tensor, as BlockDFTConv1d writes its real and complex bins
    whole = torch.full((groups + 1, m, n), 7.0)
    assert _rel(native.mix(x, packed, m, out=whole[1:]), expected) < 1e-6
    assert torch.equal(whole[0], torch.full((m, n), 7.0))


@needs_mix
def test_mix_rejects_mismatched_operands():
    packed = native.pack_mix_weights(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="float32 CPU x"):
        native.mix(torch.randn(2, 5, 3), packed, 8)  # K does not match
    with pytest.raises(ValueError, match="float32 CPU x"):
        native.mix(torch.randn(2, 4, 3).double(), packed, 8)
    with pytest.raises(ValueError, match="do not hold 13 rows"):
        native.mix(torch.randn(2, 4, 3), packed, 13)
    with pytest.raises(ValueError, match="out must be"):
        native.mix(torch.randn(2, 4, 3), packed, 8, out=torch.empty(2, 8, 4))
    with pytest.raises(ValueError, match=r"out must be .* CPU"):  # the kernel would write through its pointer
        native.mix(torch.randn(2, 4, 3), packed, 8, out=torch.empty(2, 8, 3, device="meta"))
    with pytest.raises(ValueError, match="groups, M, K"):
        native.pack_mix_weights(torch.randn(8, 4))


@needs_mix
def test_mix_does_not_depend_on_the_thread_count():
    w, x = torch.randn(5, 30, 40), torch.randn(5, 40, 70)
    packed = native.pack_mix_weights(w)
    single, several = _one_and_several_threads(native.mix, x, packed, 30)
    assert torch.equal(single, several)


@needs_mix
@pytest.mark.parametrize(
    ("batch", "c_in", "c_out", "taps", "dilation", "padding", "length"),
    [
        (1, 3, 5, 3, 1, 1, 1),  # one sample: every tap but the centre reads padding
        (2, 7, 13, 3, 5, 5, 100),
        (1, 16, 6, 7, 1, 3, 33),
        (1, 300, 20, 3, 1, 1, 50),  # K = 900: several K slices accumulate
        (3, 4, 9, 1, 1, 0, 17),  # a 1x1 convolution (the decoder's shortcuts)
        (1, 5, 5, 5, 2, 0, 40),  # no padding: a shorter output
    ],
)
def test_conv_matches_conv1d(batch, c_in, c_out, taps, dilation, padding, length):
    torch.manual_seed(c_in * taps + length)
    w, bias = torch.randn(c_out, c_in, taps), torch.randn(c_out)
    x = torch.randn(batch, c_in, length)
    packed = native.pack_conv_weights(w)
    expected = F.conv1d(x.double(), w.double(), bias.double(), 1, padding, dilation)
    assert _rel(native.conv(x, packed, c_out, taps, dilation, padding, bias), expected) < 1e-6
    assert (
        _rel(native.conv(x, packed, c_out, taps, dilation, padding), expected - bias[:, None].double()) < 1e-6
    )
    base = torch.randn(expected.shape)
    into = base.clone()
    assert native.conv(x, packed, c_out, taps, dilation, padding, bias, out=into) is into
    assert _rel(into, expected + base.double()) < 1e-6


@needs_mix
def test_conv_rejects_what_does_not_fit():
    packed = native.pack_conv_weights(torch.randn(6, 4, 3))
    with pytest.raises(ValueError, match="do not fit"):
        native.conv(torch.randn(1, 5, 20), packed, 6, 3)  # 5 channels, weights for 4
    with pytest.raises(ValueError, match="too short"):
        native.conv(torch.randn(1, 4, 1), packed, 6, 3)  # no padding: no output
    with pytest.raises(ValueError, match="bias"):
        native.conv(torch.randn(1, 4, 20), packed, 6, 3, bias=torch.zeros(5))
    with pytest.raises(ValueError, match="out must be"):
        native.conv(torch.randn(1, 4, 20), packed, 6, 3, padding=1, out=torch.zeros(1, 6, 19))
    with pytest.raises(ValueError, match=r"out must be .* CPU"):
        native.conv(torch.randn(1, 4, 20), packed, 6, 3, padding=1, out=torch.zeros(1, 6, 20, device="meta"))
    with pytest.raises(ValueError, match="float32 CPU tensor"):
        native.conv(torch.randn(4, 20), packed, 6, 3)


@needs_mix
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (2, 33, 40), (3, 1, 300)])  # [..., in]; K > 256: slices
@pytest.mark.parametrize("out_features", [1, 17, 40])
def test_linear_matches_torch(shape, out_features):
    torch.manual_seed(out_features + shape[-1])
    w, bias = torch.randn(out_features, shape[-1]), torch.randn(out_features)
    x = torch.randn(*shape)
    packed = native.pack_linear_weights(w)
    expected = F.linear(x.double(), w.double(), bias.double())
    assert _rel(native.linear(x, packed, out_features, bias), expected) < 1e-6
    assert _rel(native.linear(x, packed, out_features), expected - bias.double()) < 1e-6
    assert native.linear(torch.randn(0, shape[-1]), packed, out_features).shape == (0, out_features)


@needs_mix
def test_linear_rejects_what_does_not_fit():
    packed = native.pack_linear_weights(torch.randn(6, 4))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        native.linear(torch.randn(3, 5), packed, 6)
    with pytest.raises(ValueError, match="do not hold 17 outputs"):
        native.linear(torch.randn(3, 4), packed, 17)
    with pytest.raises(ValueError, match="bias"):
        native.linear(torch.randn(3, 4), packed, 6, torch.zeros(4))
    with pytest.raises(ValueError, match="out, in"):
        native.pack_linear_weights(torch.randn(6, 4, 1))


@needs_mix
def test_kernel_calls_are_named_operators_in_profiles():
    from torch.profiler import ProfilerActivity, profile

    packed = native.pack_mix_weights(torch.randn(2, 8, 4))
    x = torch.randn(2, 4, 5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        native.mix(x, packed, 8)
    assert "koel::mix" in {event.key for event in prof.key_averages()}
    assert torch.equal(native.mix(x, packed, 8), native.mix(x, packed, 8))  # and unprofiled, the same


def _lstm_reference(lstm: torch.nn.LSTM, x: torch.Tensor, state: torch.Tensor | None):
    """nn.LSTM in float64 on one sequence x [T, I], from state [2, 2, H] (h, c per direction)."""
    ref = copy.deepcopy(lstm).double()
    hx = None if state is None else (state[:, 0, None].double(), state[:, 1, None].double())
    with torch.no_grad():
        out, (h, c) = ref(x[None].double(), hx)
    return out[0], torch.stack([h[:, 0], c[:, 0]], dim=1)


def _lstm_projections(lstm: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    order = native.lstm_gate_order(lstm.hidden_size)
    rows = []
    for suffix in ("", "_reverse"):
        w = getattr(lstm, f"weight_ih_l0{suffix}")
        b = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
        rows.append((x @ w.t() + b)[:, order])
    return torch.stack(rows, dim=1).detach()


@needs_mix
@pytest.mark.parametrize(
    ("inputs", "hidden", "steps"), [(5, 16, 1), (40, 32, 9), (640, 256, 47), (512, 256, 150)]
)
@pytest.mark.parametrize("initial", [False, True])
def test_lstm_matches_torch(inputs, hidden, steps, initial):
    torch.manual_seed(steps + hidden)
    lstm = torch.nn.LSTM(inputs, hidden, batch_first=True, bidirectional=True)
    x = torch.randn(steps, inputs)
    state = torch.randn(2, 2, hidden) if initial else None
    packed = native.pack_lstm_weights((lstm.weight_hh_l0, lstm.weight_hh_l0_reverse))
    out, final = native.lstm(_lstm_projections(lstm, x), packed, state)
    ref_out, ref_final = _lstm_reference(lstm, x, state)
    assert out.shape == (steps, 2 * hidden) and final.shape == (2, 2, hidden)
    assert (out.double() - ref_out).abs().max() < 2e-6
    assert (final.double() - ref_final).abs().max() < 2e-6
    if state is not None:  # the caller's state is not written
        assert torch.equal(state, state.clone())


@needs_mix
def test_lstm_saturates_without_overflow():
    lstm = torch.nn.LSTM(4, 16, batch_first=True, bidirectional=True)
    with torch.no_grad():
        lstm.weight_ih_l0.mul_(1e4)
        lstm.weight_ih_l0_reverse.mul_(1e4)
    x = torch.randn(12, 4)
    packed = native.pack_lstm_weights((lstm.weight_hh_l0, lstm.weight_hh_l0_reverse))
    out, _ = native.lstm(_lstm_projections(lstm, x), packed)
    ref_out, _ = _lstm_reference(lstm, x, None)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    # pre-activations of ~1e4 computed in float32 carry ~1e-3 of rounding into the few unsaturated gates
    assert (out.double() - ref_out).abs().max() < 1e-3


@needs_mix
def test_lstm_does_not_depend_on_the_thread_count():
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(24, 32, batch_first=True, bidirectional=True)
    proj = _lstm_projections(lstm, torch.randn(30, 24))
    packed = native.pack_lstm_weights((lstm.weight_hh_l0, lstm.weight_hh_l0_reverse))
    single, several = _one_and_several_threads(native.lstm, proj, packed)
    assert torch.equal(single[0], several[0]) and torch.equal(single[1], several[1])


@needs_mix
def test_lstm_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="multiple of 16"):
        native.lstm_gate_order(24)
    with pytest.raises(ValueError, match=r"\[4H, H\]"):
        native.pack_lstm_weights((torch.randn(64, 20), torch.randn(64, 20)))
    packed = native.pack_lstm_weights((torch.randn(64, 16), torch.randn(64, 16)))
    with pytest.raises(ValueError, match="projections"):
        native.lstm(torch.randn(5, 2, 32), packed)  # gates for 8 units, weights for 16
    with pytest.raises(ValueError, match="projections"):
        native.lstm(torch.randn(0, 2, 64), packed)  # no steps
    with pytest.raises(ValueError, match="projections"):
        native.lstm(torch.randn(5, 2, 64).double(), packed)
    with pytest.raises(ValueError, match="state"):
        native.lstm(torch.randn(5, 2, 64), packed, torch.zeros(2, 16))
    with pytest.raises(ValueError, match="packed LSTM weights"):
        native.lstm(torch.randn(5, 2, 64), packed[:1])


@needs_mix
@pytest.mark.parametrize(
    ("batch", "c_in", "c_out", "length", "dilation"),
    [
        (1, 1, 1, 1, 1),
        (2, 3, 7, 13, 1),  # partial lane groups and a partial last tile
        (1, 8, 6, 50, 3),  # polyphase
        (1, 8, 6, 2, 5),  # shorter than the dilation: empty phases
        (2, 20, 17, 133, 5),
        (1, 300, 40, 64, 1),  # whole groups of 8 tiles, the contiguous path, K sliced
        (1, 4, 5, 1001, 3),  # many groups per phase, the last partial, phases of 334 and 333
    ],
)
def test_winograd_conv_matches_conv1d(batch, c_in, c_out, length, dilation):
    torch.manual_seed(length + c_in)
    x, w, b = torch.randn(batch, c_in, length), torch.randn(c_out, c_in, 3), torch.randn(c_out)
    packed = native.pack_winograd_weights(w)
    assert torch.allclose(native.unpack_winograd_weights(packed, c_out), w, atol=1e-6)
    expected = F.conv1d(x.double(), w.double(), b.double(), padding=dilation, dilation=dilation)
    assert _rel(native.winograd_conv(x, packed, c_out, dilation, b), expected) < 2e-6
    no_bias = expected - b.double()[:, None]
    assert _rel(native.winograd_conv(x, packed, c_out, dilation), no_bias) < 2e-6
    residual = torch.randn(batch, c_out, length)
    added = native.winograd_conv(x, packed, c_out, dilation, b, out=residual.clone())
    assert _rel(added, expected + residual.double()) < 2e-6


@needs_mix
def test_winograd_conv_does_not_depend_on_the_thread_count():
    torch.manual_seed(2)
    x, packed = torch.randn(1, 16, 777), native.pack_winograd_weights(torch.randn(9, 16, 3))
    single, several = _one_and_several_threads(native.winograd_conv, x, packed, 9, 3)
    assert torch.equal(single, several)


@needs_mix
def test_winograd_conv_rejects_what_does_not_fit():
    packed = native.pack_winograd_weights(torch.randn(6, 4, 3))
    with pytest.raises(ValueError, match=r"\[C_out, C_in, 3\]"):
        native.pack_winograd_weights(torch.randn(6, 4, 5))
    with pytest.raises(ValueError, match="do not fit 5 input channels"):
        native.winograd_conv(torch.randn(1, 5, 20), packed, 6)
    with pytest.raises(ValueError, match="float32 CPU tensor"):
        native.winograd_conv(torch.randn(1, 4, 20).double(), packed, 6)
    with pytest.raises(ValueError, match="bias"):
        native.winograd_conv(torch.randn(1, 4, 20), packed, 6, bias=torch.zeros(5))
    with pytest.raises(ValueError, match="out must be"):
        native.winograd_conv(torch.randn(1, 4, 20), packed, 6, out=torch.zeros(1, 6, 19))
    with pytest.raises(ValueError, match="unsupported Winograd"):
        native.winograd_conv(torch.randn(1, 4, 20), packed, 6, dilation=0)


@needs_mix
@pytest.mark.parametrize(
    ("groups", "m", "k", "n"),
    [(1, 1, 1, 1), (2, 7, 5, 3), (3, 12, 24, 16), (15, 13, 300, 70), (2, 20, 40, 400)],
)
def test_complex_mix_is_the_complex_product(groups, m, k, n):
    torch.manual_seed(m * n)
    a, b = torch.randn(groups, m, k), torch.randn(groups, m, k)
    x = torch.randn(groups, 2, k, n)
    packed = native.pack_complex_mix_weights(a, b)
    unpacked = native.unpack_complex_mix_weights(packed, m)
    assert torch.allclose(unpacked[0], a) and torch.allclose(unpacked[1], b, atol=1e-6)
    expected = torch.complex(a.double(), b.double()) @ torch.complex(x[:, 0].double(), x[:, 1].double())
    out = native.complex_mix(x, packed, m)
    assert out.shape == (groups, 2, m, n)
    assert _rel(out[:, 0], expected.real) < 1e-6 and _rel(out[:, 1], expected.imag) < 1e-6
    into = torch.full((groups, 2, m, n), float("nan"))
    assert native.complex_mix(x, packed, m, out=into) is into and torch.equal(into, out)


@needs_mix
def test_complex_mix_does_not_depend_on_the_thread_count():
    torch.manual_seed(4)
    packed = native.pack_complex_mix_weights(torch.randn(3, 20, 30), torch.randn(3, 20, 30))
    x = torch.randn(3, 2, 30, 45)
    single, several = _one_and_several_threads(native.complex_mix, x, packed, 20)
    assert torch.equal(single, several)


@needs_mix
def test_complex_mix_rejects_mismatched_operands():
    packed = native.pack_complex_mix_weights(torch.randn(2, 8, 4), torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="two \\[groups, M, K\\]"):
        native.pack_complex_mix_weights(torch.randn(2, 8, 4), torch.randn(2, 8, 5))
    with pytest.raises(ValueError, match="float32 CPU x"):
        native.complex_mix(torch.randn(2, 2, 5, 3), packed, 8)  # K does not match
    with pytest.raises(ValueError, match="float32 CPU x"):
        native.complex_mix(torch.randn(2, 4, 3), packed, 8)  # not split in real and imaginary
    with pytest.raises(ValueError, match="do not hold 13 rows"):
        native.complex_mix(torch.randn(2, 2, 4, 3), packed, 13)
    with pytest.raises(ValueError, match="out must be"):
        native.complex_mix(torch.randn(2, 2, 4, 3), packed, 8, out=torch.empty(2, 2, 8, 4))
    with pytest.raises(ValueError, match="packed complex weights"):
        native.complex_mix(torch.randn(2, 2, 4, 3), packed[:, :2], 8)


@needs_mix
@pytest.mark.parametrize(("m", "k", "n"), [(1, 1, 1), (7, 5, 3), (13, 300, 40), (20, 40, 400)])
def test_float16_weights_are_widened_exactly(m, k, n):
    """Half-packed weights give bit for bit the products of the same values packed as float32 (K of
    5 and 300: W tiles of 30 and 264 values, not whole vectors of 8; magnitudes down to float16's
    subnormals), and their rounding error."""
    torch.manual_seed(m + k + n)
    w, x = torch.randn(3, m, k), torch.randn(3, k, n)
    half = native.pack_mix_weights(w, half=True)
    assert half.dtype == torch.float16 and torch.equal(
        half.float(), native.pack_mix_weights(w.half().float())
    )
    assert torch.equal(native.mix(x, half, m), native.mix(x, half.float(), m))
    assert 1e-5 < _rel(native.mix(x, half, m), torch.bmm(w.double(), x.double())) < 1e-3
    tiny = native.pack_mix_weights(w * torch.logspace(-7, 0, k), half=True)  # subnormals too
    assert torch.equal(native.mix(x, tiny, m), native.mix(x, tiny.float(), m))
    a, b, xc = torch.randn(3, m, k), torch.randn(3, m, k), torch.randn(3, 2, k, n)
    half_c = native.pack_complex_mix_weights(a, b, half=True)
    assert torch.equal(native.complex_mix(xc, half_c, m), native.complex_mix(xc, half_c.float(), m))
    wc, xs = torch.randn(m, k, 3), torch.randn(2, k, n)
    half_conv = native.pack_conv_weights(wc, half=True)
    assert torch.equal(native.conv(xs, half_conv, m, 3, 2, 2), native.conv(xs, half_conv.float(), m, 3, 2, 2))
    half_w = native.pack_winograd_weights(wc, half=True)
    assert torch.equal(native.winograd_conv(xs, half_w, m, 1), native.winograd_conv(xs, half_w.float(), m, 1))
    with pytest.raises(ValueError, match="float32 or float16"):
        native.mix(x, half.double(), m)
