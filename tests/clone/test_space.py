"""The voice space (blend + offset), voice arithmetic without the model, and the optimisation loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koel.clone import CloneError, blend_voices, interpolate
from koel.clone.space import StyleParams, VoiceBank, official_bank
from koel.voices import Voice, VoiceError, VoiceStore, save_voice


def _bank(n: int = 4, dim: int = 256, seed: int = 0) -> VoiceBank:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, dim, generator=g)
    drift = torch.linspace(0, 1, 510)[None, :, None] * torch.randn(n, 1, dim, generator=g) * 0.3
    return VoiceBank(tuple(f"v{i}" for i in range(n)), base + drift)


def test_initial_params_are_the_weighted_blend():
    bank = _bank()
    w = torch.tensor([0.5, 0.3, 0.2, 0.0])
    params = StyleParams(bank, w)
    expected = 0.5 * bank.packs[0] + 0.3 * bank.packs[1] + 0.2 * bank.packs[2]
    torch.testing.assert_close(params.pack(), expected, atol=1e-4, rtol=1e-4)
    rows = params.rows([1, 100, 510, 9999])
    torch.testing.assert_close(rows, expected[[0, 99, 509, 509]], atol=1e-4, rtol=1e-4)
    assert float(params.offset_penalty().detach()) == 0.0


def test_gradients_reach_weights_and_offset_and_offset_is_scaled():
    bank = _bank()
    params = StyleParams(bank)
    params.rows([50]).pow(2).sum().backward()
    assert params.logits.grad is not None and float(params.logits.grad.abs().sum()) > 0
    assert params.offset.grad is not None and float(params.offset.grad.abs().sum()) > 0
    with torch.no_grad():
        params.offset.fill_(1.0)
    moved = params.pack() - StyleParams(bank).pack()
    torch.testing.assert_close(moved, bank.scale.expand(510, -1))
    assert float(params.offset_penalty().detach()) == pytest.approx(1.0)
    assert "v0" in params.describe() and "offset 1.00 sd" in params.describe()


def test_bank_scale_is_positive_per_dimension():
    bank = _bank()
    bank.packs[:, :, 7] = 1.0  # a dimension on which the voices agree still gets a floor
    scale = bank.scale
    assert scale.shape == (256,)
    assert float(scale.min()) > 0
    assert bank.subset(["v2", "v0"]).names == ("v2", "v0")
    assert bank.fingerprint() != _bank(seed=1).fingerprint()


def test_official_bank_reads_what_the_store_has(tmp_path):
    packs = _bank(3).packs
    for name, pack in zip(("af_heart", "am_adam", "not_official"), packs):
        save_voice(pack, tmp_path / f"{name}.pt")
    wanted = ("af_heart", "af_bella", "am_adam")
    bank = official_bank(VoiceStore(tmp_path, allow_download=False), names=wanted)
    assert bank.names == ("af_heart", "am_adam")
    torch.testing.assert_close(bank.packs[0], packs[0])
    with pytest.raises(VoiceError, match="KOEL_VOICES_DIR"):
        official_bank(VoiceStore(tmp_path / "empty", allow_download=False), names=wanted)


def test_blend_and_interpolate():
    a, b = (Voice(n, p) for n, p in zip("ab", _bank(2).packs))
    mixed = blend_voices([(a, 3.0), (b, 1.0)], name="mix")
    torch.testing.assert_close(mixed.pack, 0.75 * a.pack + 0.25 * b.pack)
    torch.testing.assert_close(interpolate(a, b, 0.25).pack, mixed.pack)
    torch.testing.assert_close(interpolate(a, b, 0.0).pack, a.pack)
    assert interpolate(a, b, 1.2).pack.shape == (510, 256)
    with pytest.raises(CloneError, match="too far"):
        interpolate(a, b, 3.0)
    with pytest.raises(CloneError, match="non-negative"):
        blend_voices([(a, -1.0), (b, 2.0)])
    with pytest.raises(CloneError):
        blend_voices([])
    nan = Voice("nan", a.pack.clone())
    nan.pack[3, 3] = float("nan")
    with pytest.raises(VoiceError, match="NaN"):
        blend_voices([(nan, 1.0), (b, 1.0)])


def test_optimise_moves_the_blend_towards_the_target(tiny_model):
    """With the tiny random model: the loop fits blend weights to a target voice's spectrum/pitch."""
    from koel.clone.create import CloneOptions, optimise
    from koel.clone.objective import CloneObjective, LogMel, LossWeights, ReferenceTargets
    from koel.clone.render import Utterance, freeze, render_crop
    from koel.clone.speaker import SpeakerEncoder

    freeze(tiny_model)
    with torch.no_grad():  # about 6 frames (150 ms) per phoneme instead of the fixture's 25: short audio
        tiny_model.predictor.duration_proj.linear_layer.bias.sub_(10.0)
    bank = _bank(3, dim=2 * tiny_model.config.style_dim, seed=3)
    bank = VoiceBank(bank.names, bank.packs * 0.5)
    utts = [Utterance.from_phonemes(p) for p in ("hˈɛlO wˈɜɹld", "ðɪs ɪz ɐ tˈɛst", "wˌʌn tˈu θɹˈi fˈɔɹ")]
    logmel = LogMel()
    target = StyleParams(bank.subset(["v0"]))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        outs = [render_crop(tiny_model, u, target.rows([u.n_phonemes]), 10_000, rng) for u in utts]
        assert all(o.audio.shape[-1] < 3 * 24_000 for o in outs)
        from koel.clone.objective import spectral_shape

        spectrum = torch.stack([spectral_shape(logmel(o.audio)[0]) for o in outs]).mean(0)
    targets = ReferenceTargets(torch.zeros(256), spectrum, float("nan"), float("nan"), None)
    weights = LossWeights(speaker=0.0, spectrum=1.0, pitch=0.0, rate=0.0, offset=1.0)
    objective = CloneObjective(targets, SpeakerEncoder.pretrained(), logmel, weights)
    params = StyleParams(bank)  # uniform start
    options = CloneOptions(steps=24, learning_rate=0.1, crop_seconds=1.0)
    history = optimise(tiny_model, params, utts, objective, options)
    first = np.mean([h["spectrum"] for h in history[:3]])
    last = np.mean([h["spectrum"] for h in history[-3:]])
    assert last < 0.8 * first, f"spectrum loss {first:.3f} -> {last:.3f}"
    assert int(params.weights.detach().argmax()) == 0, params.describe()


def test_a_silent_result_is_refused(monkeypatch):
    """The last check before a voice is returned: a pack that makes silence never gets out."""
    from koel.clone import create
    from koel.clone.objective import ReferenceTargets

    monkeypatch.setattr(create, "speak", lambda model, utt, row: np.zeros(24_000, dtype=np.float32))
    targets = ReferenceTargets(torch.ones(256) / 16, torch.zeros(80), 7.5, 0.2, None)
    with pytest.raises(CloneError, match="does not speak"):
        create.check_voice(None, torch.zeros(510, 256), None, targets)  # type: ignore[arg-type]
    monkeypatch.setattr(create, "speak", lambda model, utt, row: np.full(24_000, np.nan, dtype=np.float32))
    with pytest.raises(CloneError, match="does not speak"):
        create.check_voice(None, torch.zeros(510, 256), None, targets)  # type: ignore[arg-type]
