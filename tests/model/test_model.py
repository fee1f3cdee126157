"""The model on its own: shapes, audio-length rule, batching = one at a time, bad inputs, STFT."""

from __future__ import annotations

import math
from unittest.mock import patch

import pytest
import torch

from koel.config import ModelConfig
from koel.model import KokoroModel, ModelInputError, alignment_from_durations
from koel.model.stft import ConvSTFT


def _wrap(ids: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros(1, dtype=torch.long)
    return torch.cat([zero, ids, zero])[None]


def test_official_config_has_the_checkpoint_parameter_count():
    model = KokoroModel(ModelConfig())
    # 81,763,410 quoted for Kokoro-82M minus the unused ALBERT pooler (590,592): fact sheet section 8.
    assert sum(p.numel() for p in model.parameters()) == 81_172_818


def test_audio_length_is_600_samples_per_frame(tiny_model):
    ids = _wrap(torch.randint(1, 170, (7,)))
    out = tiny_model.synthesize(ids, torch.randn(1, 32))
    assert out.durations.shape == (1, 9)
    assert bool((out.durations >= 1).all())
    assert out.audio.shape[-1] == 600 * int(out.durations.sum()) == int(out.audio_lengths[0])
    assert out.f0 is not None and out.f0.shape[-1] == 2 * int(out.durations.sum())


def test_speed_shortens_durations(tiny_model):
    ids = _wrap(torch.randint(1, 170, (12,)))
    s = torch.randn(1, 32)
    slow = tiny_model.synthesize(ids, s, speed=0.5).durations.sum()
    fast = tiny_model.synthesize(ids, s, speed=2.0).durations.sum()
    assert fast < slow


def test_forced_durations_are_used(tiny_model):
    ids = _wrap(torch.randint(1, 170, (4,)))
    forced = torch.tensor([[2, 3, 1, 4, 5, 2]])
    out = tiny_model.synthesize(ids, torch.randn(1, 32), durations=forced)
    assert out.durations.tolist() == forced.tolist()
    assert out.audio.shape[-1] == 600 * 17


def test_batch_equals_one_at_a_time(tiny_model):
    torch.manual_seed(1)
    seqs = [torch.randint(1, 170, (n,)) for n in (5, 9, 14, 9)]
    styles = torch.randn(len(seqs), 32)
    width = max(len(q) for q in seqs) + 2
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, q in enumerate(seqs):
        ids[i, 1 : 1 + len(q)] = q
    lengths = torch.tensor([len(q) + 2 for q in seqs])
    batch = tiny_model.synthesize(ids, styles, speed=torch.tensor([1.0, 1.2, 0.9, 1.0]), lengths=lengths)
    for i, q in enumerate(seqs):
        single = tiny_model.synthesize(_wrap(q), styles[i : i + 1], speed=[1.0, 1.2, 0.9, 1.0][i])
        assert batch.item_durations(i).tolist() == single.item_durations(0).tolist()
        a, b = batch.item_audio(i), single.item_audio(0)
        err = (a - b).abs().max().item()
        assert err < 1e-3 * b.abs().max().item(), (
            f"utterance {i}: max error {err} vs peak {b.abs().max().item()}"
        )


def test_alignment_from_durations():
    aln = alignment_from_durations(torch.tensor([[1, 2, 0], [2, 1, 1]]))
    assert aln.shape == (2, 3, 4)
    assert aln[0].tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert aln[1].sum(0).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("ids", "style", "match"),
    [
        (torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 32), "at least one phoneme"),
        (torch.ones(1, 600, dtype=torch.long), torch.zeros(1, 32), "exceed"),
        (torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 31), "style must be"),
        (torch.ones(1, 5, dtype=torch.long), torch.full((1, 32), math.nan), "NaN"),
        (torch.full((1, 5), 999, dtype=torch.long), torch.zeros(1, 32), "token ids"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_model, ids, style, match):
    with pytest.raises(ModelInputError, match=match):
        tiny_model.synthesize(ids, style)
    # the model still works afterwards
    assert tiny_model.synthesize(_wrap(torch.tensor([5, 6])), torch.zeros(1, 32)).audio.numel() > 0


def test_bad_speed(tiny_model):
    with pytest.raises(ModelInputError, match="speed"):
        tiny_model.synthesize(_wrap(torch.tensor([5, 6])), torch.zeros(1, 32), speed=0.0)


def test_fold_weight_norm_keeps_outputs(tiny_model):
    ids = _wrap(torch.randint(1, 170, (6,)))
    s = torch.randn(1, 32)
    before = tiny_model.synthesize(ids, s).audio
    after = tiny_model.fold_weight_norm().synthesize(ids, s).audio
    assert (before - after).abs().max() < 1e-4 * before.abs().max()


def test_conv_stft_matches_torch():
    stft = ConvSTFT(20, 5)
    x = torch.randn(2, 3000)
    mag, phase = stft.transform(x)
    ref = torch.stft(x, 20, 5, 20, torch.hann_window(20), center=True, return_complex=True)
    assert (mag - ref.abs()).abs().max() < 1e-5
    wrapped = torch.remainder(phase - ref.angle() + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-3
    m, p = torch.rand(2, 11, 200), torch.rand(2, 11, 200) * 6 - 3
    expected = torch.istft(torch.polar(m, p), 20, 5, 20, torch.hann_window(20), center=True)
    got = stft.inverse(m, p)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("n_fft,hop", [(20, 5), (16, 4), (16, 6)])
def test_inverse_stft_overlap_add_is_the_transposed_convolution(n_fft, hop):
    """Eager runs add the frames' segments in shifted slices where n_fft is a multiple of hop (the
    transposed convolutions take a slow path on the CPU); a trace keeps the convolutions."""
    stft = ConvSTFT(n_fft, hop)
    bins = n_fft // 2 + 1
    for frames in (1, 2, 7, 300):
        m = torch.rand(2, bins, frames, requires_grad=True)
        p = torch.rand(2, bins, frames) * 6 - 3
        got = stft.inverse(m, p)
        with patch("torch.jit.is_tracing", return_value=True):
            traced = stft.inverse(m, p)
        assert got.shape == traced.shape == (2, hop * (frames - 1))
        assert (got - traced).abs().max() < 1e-6 if frames > 1 else got.numel() == 0
        if frames > 1:
            expected = torch.istft(
                torch.polar(m, p), n_fft, hop, n_fft, torch.hann_window(n_fft), center=True
            )
            assert (got - expected[..., : got.shape[-1]]).abs().max() < 1e-5
            (grad,) = torch.autograd.grad(got.square().sum(), m)
            (traced_grad,) = torch.autograd.grad(traced.square().sum(), m)
            assert torch.allclose(grad, traced_grad, atol=1e-5)


def test_training_mode_backward(tiny_model):
    """Gradients reach every parameter group through the differentiable stages."""
    model = tiny_model.train()
    ids = _wrap(torch.randint(1, 170, (6,)))
    s = torch.randn(1, 32)
    d, logits = model.prosody_features(ids, None, s[:, 16:])
    dur = torch.full((1, 8), 2, dtype=torch.long)
    spec, f0, energy = model.acoustic(ids, None, d, alignment_from_durations(dur), s, None)
    audio = model.decoder.generator.spectrogram_to_audio(spec)
    loss = audio.pow(2).mean() + logits.mean() + f0.mean() + energy.mean()
    loss.backward()
    for name in ("bert", "bert_encoder", "predictor", "text_encoder", "decoder"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads, f"no gradient reached {name}"


def test_harmonic_source_in_blocks_matches_the_whole():
    import torch

    from koel.model.generator import SourceModuleHnNSF

    torch.manual_seed(0)
    source = SourceModuleHnNSF(upsample_scale=300)
    f0 = torch.rand(1, 1234) * 250 + 60
    f0[:, 100:200] = 0  # unvoiced stretch across a block edge
    blocked = source(f0)
    source.block_frames = 1 << 30
    whole = source(f0)
    assert blocked.shape == whole.shape == (1, 1234 * 300)
    # float32 rounding of interpolation positions, amplified by phases of ~10^6 radians
    assert (blocked - whole).abs().max() < 5e-3
    assert torch.equal(
        blocked[:, : 399 * 300], whole[:, : 399 * 300]
    )  # the first block is the same arithmetic
