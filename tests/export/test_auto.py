"""Engine choice (default_engine), the fast PyTorch engine, and the ``koel export`` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koel.backends.auto import (
    CPU_TILE_FRAMES,
    CPU_WHOLE_FRAMES,
    EngineChoiceError,
    FastTorchEngine,
    available_engines,
    default_engine,
    tune_cpu_process,
)
from koel.backends.base import EngineRequest
from koel.backends.torch_engine import TorchEngine


def _requests(n: int = 3) -> list[EngineRequest]:
    rng = np.random.default_rng(0)
    return [
        EngineRequest(
            tuple([0, *rng.integers(1, 170, 4 + 3 * i).tolist(), 0]),
            rng.standard_normal(32).astype(np.float32),
        )
        for i in range(n)
    ]


def test_unknown_engine_is_refused(tiny_model):
    with pytest.raises(EngineChoiceError, match="unknown engine"):
        default_engine("warp-drive", model=tiny_model)


def test_auto_picks_the_fast_engine_and_it_runs(tiny_model):
    tiny_model.fold_weight_norm()
    engine = default_engine(model=tiny_model, device="cpu", threads=1)
    assert isinstance(engine, FastTorchEngine) and engine.name == "fast"
    results = engine.run(_requests())
    assert [len(r.durations) for r in results] == [len(q.ids) for q in _requests()]
    for r in results:
        assert len(r.audio) == 600 * int(r.durations.sum())


def test_preference_and_environment_override(tiny_model, monkeypatch):
    tiny_model.fold_weight_norm()
    engine = default_engine("torch", model=tiny_model, device="cpu", threads=1)
    assert type(engine) is TorchEngine
    monkeypatch.setenv("KOEL_ENGINE", "torch")
    assert type(default_engine(model=tiny_model, device="cpu", threads=1)) is TorchEngine
    assert "fast" in available_engines() and "torch" in available_engines()


def test_fast_engine_batches_like_single_calls(tiny_model):
    tiny_model.fold_weight_norm()
    engine = FastTorchEngine(tiny_model, precision="fp32", max_batch=8, tile_frames=0)
    requests = _requests(4)
    together = engine.run(requests)
    for req, res in zip(requests, together, strict=True):
        (alone,) = engine.run([req])
        assert res.durations.tolist() == alone.durations.tolist()
        assert np.abs(res.audio - alone.audio).max() <= 1e-3 * np.abs(alone.audio).max()


def test_tune_cpu_process_sets_threads():
    before = torch.get_num_threads()
    try:
        tune_cpu_process(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_export_command_is_registered():
    from koel.cli import build_parser

    args = build_parser().parse_args(["export", "-o", "x.onnx", "--precision", "int8", "--no-check"])
    assert args.output == "x.onnx" and args.precision == "int8" and args.no_check


@pytest.mark.slow
def test_export_command_on_the_real_model(real_model, shared_voices, tmp_path, capsys):
    from koel.cli import main

    out = tmp_path / "koel.onnx"
    assert main(["export", "-o", str(out)]) == 0
    report = capsys.readouterr().out
    assert "durations identical" in report and out.stat().st_size > 100e6


def test_engine_flag_on_say_and_serve():
    from koel.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["say", "hi", "--engine", "torch"]).engine == "torch"
    assert parser.parse_args(["say", "hi"]).engine is None  # automatic choice
    with pytest.raises(SystemExit):
        parser.parse_args(["say", "hi", "--engine", "warp-drive"])
    try:
        import koel.serve.cli  # noqa: F401  (the server extra may be absent)
    except ImportError:
        return
    assert parser.parse_args(["serve", "--engine", "onnx"]).engine == "onnx"


def test_onnx_engine_refuses_pytorch_weights_and_torch_refuses_onnx_files():
    with pytest.raises(EngineChoiceError, match="koel export"):
        default_engine("onnx", "cpu", source="kokoro-v1_0.pth")
    with pytest.raises(EngineChoiceError, match="--engine onnx"):
        default_engine("fast", "cpu", source="model.onnx")


def test_fast_engine_tiles_long_utterances_only(tiny_model):
    tiny_model.fold_weight_norm()
    requests = _requests(3)
    untiled = FastTorchEngine(tiny_model, precision="fp32", tile_frames=1 << 20).run(requests)  # one tile
    reference = TorchEngine(tiny_model).run(requests)
    for a, b in zip(untiled, reference, strict=True):
        assert a.durations.tolist() == b.durations.tolist()
        # 2e-4: the tiny model's source is unvoiced, hence constant, and so is every channel of its
        # last noise branch; instance norm divides the rounding of x - mean there by sqrt(eps), so
        # two float32 implementations differ by ~1e-4 of the signal (voiced, the phase moves more)
        assert np.abs(a.audio - b.audio).max() <= 2e-4 * np.abs(b.audio).max()
    frames = [int(r.durations.sum()) * 2 for r in untiled]  # generator frames: 2 per duration frame
    tile, whole = max(frames) // 3, max(frames) // 2
    engine = FastTorchEngine(tiny_model, precision="fp32", tile_frames=tile, whole_frames=whole)
    assert (engine.tile_frames, engine.whole_frames) == (tile, whole)
    assert any(n <= whole for n in frames) and any(n > whole for n in frames)
    for request, plain, n in zip(requests, untiled, frames, strict=True):
        (tiled,) = engine.run([request])
        assert tiled.durations.tolist() == plain.durations.tolist() and len(tiled.audio) == len(plain.audio)
        error = np.abs(tiled.audio - plain.audio).max() / np.abs(plain.audio).max()
        if n <= whole:  # short enough: computed untiled
            assert error <= 1e-4
        else:  # tiled: close to the untiled audio, not equal (tile statistics)
            assert 1e-6 < error < 0.5
    with pytest.raises(ValueError, match="tile_frames"):
        FastTorchEngine(tiny_model, tile_frames=-1)
    with pytest.raises(ValueError, match="whole_frames"):
        FastTorchEngine(tiny_model, whole_frames=-1)
    default = FastTorchEngine(tiny_model, precision="fp32")
    assert (default.tile_frames, default.whole_frames) == (CPU_TILE_FRAMES, CPU_WHOLE_FRAMES)


def test_long_form_requests_are_computed_whole_only_within_one_tile_window(tiny_model):
    from dataclasses import replace

    from koel.model.fast import TILE_MARGIN

    tiny_model.fold_weight_norm()
    requests = _requests(3)
    plain = FastTorchEngine(tiny_model, precision="fp32", tile_frames=0).run(requests)
    frames = [int(r.durations.sum()) * 2 for r in plain]  # generator frames: 2 per duration frame
    tile = max(frames) // 4
    engine = FastTorchEngine(tiny_model, precision="fp32", tile_frames=tile, whole_frames=1 << 20)
    for a, b in zip(engine.run(requests), plain, strict=True):  # not long-form: computed whole
        assert np.abs(a.audio - b.audio).max() <= 1e-4 * np.abs(b.audio).max()
    window = tile + 2 * TILE_MARGIN
    assert any(n > window for n in frames)
    for request, untiled, n in zip(requests, plain, frames, strict=True):
        (long,) = engine.run([replace(request, long_form=True)])
        assert long.durations.tolist() == untiled.durations.tolist() and len(long.audio) == len(untiled.audio)
        error = np.abs(long.audio - untiled.audio).max() / np.abs(untiled.audio).max()
        assert error <= 1e-4 if n <= window else 1e-3 < error < 0.5, (n, window, error)


def test_fast_engine_streams_tiles_that_add_up(tiny_model):
    tiny_model.fold_weight_norm()
    engine = FastTorchEngine(tiny_model, precision="fp32")
    (request,) = _requests(1)
    (whole,) = engine.run([request])
    durations, pieces = engine.stream(request, first_frames=2)
    audio = np.concatenate(list(pieces))
    assert durations.tolist() == whole.durations.tolist() and len(audio) == len(whole.audio)


def test_tile_priors_are_kept_apart_for_int8_and_float_pl_bert(tiny_model, monkeypatch, tmp_path):
    import copy

    from torch import nn

    from koel.model.fast import int8_linear_available

    if not int8_linear_available():
        pytest.skip("PyTorch's int8 linear (FBGEMM) is x86 only")
    monkeypatch.setenv("KOEL_CACHE_DIR", str(tmp_path))
    tiny_model.fold_weight_norm()
    with torch.no_grad():  # PL-BERT's weights on a per-row int8 grid, as the embedded ones are
        for m in tiny_model.bert.modules():
            if type(m) is nn.Linear:
                scale = m.weight.abs().amax(dim=1, keepdim=True) / 64
                m.weight.copy_(torch.round(m.weight / scale) * scale)
    engines = [
        FastTorchEngine(copy.deepcopy(tiny_model), precision="fp32", int8_text=on) for on in (True, False)
    ]
    assert [e.int8_text for e in engines] == [True, False]
    (request,) = _requests(1)
    for engine in engines:
        engine.tile_prior(request)
    assert len(list((tmp_path / "tiles").rglob("prior-*"))) == 2
