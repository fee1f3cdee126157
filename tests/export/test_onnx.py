"""koel's ONNX export: durations out, dynamic length, parity with PyTorch, variants, and the ONNX engine."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from koel.backends.base import EngineRequest
from koel.backends.onnx_engine import OnnxEngine, OnnxEngineError
from koel.export.onnx_export import (
    EXPORT_FORMAT,
    _atan2_symbolic,
    check_parity,
    convert_precision,
    export_onnx,
)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from koel.config import ModelConfig
    from koel.model import KokoroModel

    torch.manual_seed(0)
    model = KokoroModel(ModelConfig.tiny()).eval()
    with torch.no_grad():  # spread the durations, keep the random spectrogram in a sane range
        model.predictor.duration_proj.linear_layer.weight.mul_(30)
        model.decoder.generator.conv_post.parametrizations.weight.original0.mul_(0.01)
    model.fold_weight_norm()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, path


def _inputs(lengths: tuple[int, ...], dim: int = 32) -> list[tuple[list[int], np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        ([0, *rng.integers(1, 170, n).tolist(), 0], rng.standard_normal(dim).astype(np.float32))
        for n in lengths
    ]


def test_export_has_durations_and_metadata(tiny_export):
    _, path = tiny_export
    proto = onnx.load(str(path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["input_ids", "style", "speed"]
    assert [o.name for o in proto.graph.output] == ["audio", "durations"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["format"] == EXPORT_FORMAT and meta["precision"] == "fp32"


def test_onnx_matches_pytorch_at_lengths_unlike_the_trace(tiny_export):
    model, path = tiny_export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = check_parity(model, session, _inputs((1, 9, 40)))  # the trace used 13 phonemes
    for row in rows:
        assert row.durations_equal, row
        assert row.spectral_error < 0.1, row


def test_onnx_engine_runs_the_export(tiny_export):
    model, path = tiny_export
    engine = OnnxEngine(path, threads=1)
    requests = [EngineRequest(tuple(ids), style, 1.0) for ids, style in _inputs((4, 17))]
    results = engine.run(requests)
    for req, res in zip(requests, results, strict=True):
        assert res.durations.shape == (len(req.ids),)
        assert len(res.audio) == 600 * int(res.durations.sum())
        ref = model.synthesize(torch.tensor([list(req.ids)]), torch.from_numpy(req.style)[None])
        assert res.durations.tolist() == ref.durations[0].tolist()


def _initializer_bytes(path) -> int:
    return sum(len(init.raw_data) for init in onnx.load(str(path)).graph.initializer)


def _run_variant(path, precision):
    engine = OnnxEngine(path, threads=1)
    assert engine.precision == precision
    ids, style = _inputs((12,))[0]
    (result,) = engine.run([EngineRequest(tuple(ids), style, 1.0)])
    assert np.isfinite(result.audio).all() and len(result.audio) == 600 * int(result.durations.sum())
    return result


def test_fp16_variant_runs(tiny_export, tmp_path):
    _, path = tiny_export
    _run_variant(convert_precision(path, tmp_path / "tiny-fp16.onnx", "fp16"), "fp16")
    # the weights and transform constants are stored in half precision (the graph itself, a large share
    # of a tiny model's file, does not shrink)
    half = _initializer_bytes(tmp_path / "tiny-fp16.onnx")
    assert half < 0.55 * _initializer_bytes(path)


@pytest.mark.slow
def test_int8_variant_is_smaller_and_runs(tiny_export, tmp_path):
    model, path = tiny_export
    target = export_onnx(model, tmp_path / "tiny-int8.onnx", precision="int8")
    _run_variant(target, "int8")
    assert target.stat().st_size < 0.5 * path.stat().st_size


def test_engine_refuses_files_that_are_not_koel_exports(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph), str(other))
    with pytest.raises(OnnxEngineError, match="not a koel export"):
        OnnxEngine(other)
    with pytest.raises(OnnxEngineError, match="does not exist"):
        OnnxEngine(tmp_path / "missing.onnx")


class _Atan2(nn.Module):
    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.atan2(y, x)


def test_atan2_export_keeps_torch_quadrants(tmp_path):
    path = tmp_path / "atan2.onnx"
    y = torch.tensor([0.0, 0.0, 1.0, -1.0, 0.5, -0.5, 1.0, -1.0, 0.0])
    x = torch.tensor([-1.0, 1.0, 0.0, 0.0, -2.0, -2.0, 3.0, 3.0, 0.0])
    torch.onnx.register_custom_op_symbolic("aten::atan2", _atan2_symbolic, 17)
    try:
        torch.onnx.export(_Atan2(), (y, x), str(path), dynamo=False, opset_version=17, input_names=["y", "x"])
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::atan2", 17)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"y": y.numpy(), "x": x.numpy()}
    )
    assert np.allclose(got, torch.atan2(y, x).numpy(), atol=1e-6), got
    assert math.isclose(float(got[0]), math.pi, rel_tol=1e-6)  # the stock exporter gives -pi here
