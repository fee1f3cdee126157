"""Loading from every source: the embedded cache, the official .pth layout, koel checkpoints.

Weights are compared tensor by tensor. Audio is compared by log-mel spectrum: two builds of the same
weights may sum in another order, and source-STFT bins whose imaginary part is numerically zero then
flip between +pi and -pi, which moves samples by a few percent without changing the sound.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from koel.dsp import log_mel
from koel.model import KokoroModel
from koel.weights.errors import WeightsError
from koel.weights.loading import CACHE_NAME, embedded_state_dict, load_model, save_checkpoint

IDS = torch.tensor([[0, 50, 83, 54, 156, 31, 16, 65, 156, 87, 123, 54, 46, 4, 0]])


def _audio(model: KokoroModel, style: torch.Tensor) -> torch.Tensor:
    return model.synthesize(IDS, style).audio[0]


def _mel_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"lengths differ: {a.shape} vs {b.shape}"
    ma, mb = log_mel(a).flatten(), log_mel(b).flatten()
    return float(torch.corrcoef(torch.stack([ma, mb]))[0, 1])


def _assert_same_weights(reference: KokoroModel, other: KokoroModel, rtol: float = 0.0) -> None:
    ref, got = reference.state_dict(), other.state_dict()
    assert ref.keys() == got.keys()
    for key, value in ref.items():
        scale = float(value.abs().max()) or 1.0
        err = float((value - got[key]).abs().max())
        assert err <= rtol * scale, f"{key}: max error {err:.3g} (scale {scale:.3g})"


@pytest.fixture(scope="module")
def style():
    from koel.voices import VoiceStore

    return VoiceStore().get("jf_alpha").row(13)


@pytest.fixture(scope="module")
def training_layout_model(_koel_cache):
    return load_model(cache=_koel_cache, for_training=True).eval()


def _official_checkpoint(model_with_weight_norm: KokoroModel) -> dict[str, dict[str, torch.Tensor]]:
    """The exact kokoro-v1_0.pth layout: five module dicts, 'module.' prefixes, weight_g/weight_v."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in model_with_weight_norm.state_dict().items():
        top, rest = key.split(".", 1)
        rest = rest.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        )
        out.setdefault(top, {})[f"module.{rest}"] = value.clone()
    hidden = model_with_weight_norm.config.plbert.hidden_size
    out["bert"]["module.pooler.weight"] = torch.randn(hidden, hidden)  # present in the real file, unused
    out["bert"]["module.pooler.bias"] = torch.zeros(hidden)
    return out


def _folded_copy(model: KokoroModel) -> KokoroModel:
    import copy

    return copy.deepcopy(model).fold_weight_norm()


def test_training_layout_equals_inference_layout(real_model, training_layout_model, style):
    b = _audio(training_layout_model, style)
    assert torch.isfinite(b).all(), "weight-norm split of folded weights produced NaN"
    _assert_same_weights(real_model, _folded_copy(training_layout_model), rtol=1e-5)
    assert _mel_correlation(_audio(real_model, style), b) > 0.999


def test_official_pth_format_loads(tmp_path, real_model, training_layout_model, style):
    path = tmp_path / "kokoro-v1_0.pth"
    torch.save(_official_checkpoint(training_layout_model), path)
    loaded = load_model(path)
    _assert_same_weights(real_model, loaded, rtol=1e-5)
    assert _mel_correlation(_audio(real_model, style), _audio(loaded, style)) > 0.999
    trainable = load_model(path, for_training=True)
    assert any("parametrizations" in key for key in trainable.state_dict()), (
        "training layout keeps weight norm"
    )


def test_official_pth_with_missing_keys_is_rejected(tmp_path, training_layout_model):
    checkpoint = _official_checkpoint(training_layout_model)
    del checkpoint["decoder"]["module.generator.conv_post.weight_v"]
    path = tmp_path / "broken.pth"
    torch.save(checkpoint, path)
    with pytest.raises(WeightsError, match="missing"):
        load_model(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(WeightsError, match=r"noise\.pth"):
        load_model(path)
    torch.save({"just": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a Kokoro checkpoint"):
        load_model(tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.pth")
    (tmp_path / "dir").mkdir()
    with pytest.raises(WeightsError, match="not a koel checkpoint"):
        load_model(tmp_path / "dir")


def test_koel_checkpoint_round_trip(tmp_path, real_model, style):
    save_checkpoint(real_model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    _assert_same_weights(real_model, loaded)  # bit-exact weights
    assert loaded.config == real_model.config
    assert _mel_correlation(_audio(real_model, style), _audio(loaded, style)) > 0.9999


def test_tiny_checkpoint_keeps_its_config(tmp_path, tiny_model):
    save_checkpoint(tiny_model, tmp_path / "tiny")
    loaded = load_model(tmp_path / "tiny", for_training=True)
    assert loaded.config == tiny_model.config
    ids = torch.tensor([[0, 50, 51, 0]])
    s = torch.randn(1, 32)
    assert torch.allclose(
        tiny_model.synthesize(ids, s).audio, loaded.eval().synthesize(ids, s).audio, atol=1e-5
    )


def test_corrupt_cache_is_rebuilt(tmp_path, _koel_cache):
    shutil.copytree(_koel_cache, tmp_path, dirs_exist_ok=True)
    target = tmp_path / CACHE_NAME
    # valid cache, read back; cloned because safetensors may map the file we are about to damage
    reference = {k: v.clone() for k, v in embedded_state_dict(tmp_path).items()}
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte deep inside a tensor
    target.write_bytes(bytes(data))
    rebuilt = embedded_state_dict(tmp_path)
    assert rebuilt.keys() == reference.keys()
    differing = [k for k in reference if not torch.equal(rebuilt[k], reference[k])]
    assert not differing, f"rebuilt cache differs from the original in {differing[:5]}"
    target.write_bytes(b"truncated")
    assert len(embedded_state_dict(tmp_path)) == len(reference)
