"""ONNX Runtime engine: runs koel's own export (``koel export``) with durations, on CPU or GPU providers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from koel.backends.base import EngineRequest, EngineResult
from koel.export.onnx_export import EXPORT_FORMAT, OUTPUT_NAMES, ExportPrecision

log = logging.getLogger(__name__)


class OnnxEngineError(RuntimeError):
    """The ONNX file is missing, is not a koel export, or onnxruntime cannot run it."""


def cpu_threads() -> int:
    """Threads for one inference: the CPUs this process may use (the graph is one sequential chain)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxEngine:
    """Synthesises with an ONNX file written by :func:`koel.export.export_onnx` (batch 1 per call).

    ``threads`` defaults to the usable CPUs, with one inter-op thread (the graph is a chain), thread
    spinning off and every ONNX Runtime graph optimisation on.
    """

    name = "onnx"

    def __init__(
        self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise OnnxEngineError(f"{self.path} does not exist: create it with 'koel export -o {self.path}'")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # threads sleep at the end of each op instead of spinning: on a busy or small machine spinning
        # steals the cores the other thread needs (official export, 2 threads: 0.56 vs 0.75 s per
        # audio-second, bench/speed.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise OnnxEngineError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != EXPORT_FORMAT:
            raise OnnxEngineError(
                f"{self.path} is not a koel export (format {meta.get('format')!r}); the official Kokoro export "
                "lacks durations: run 'koel export' to create one"
            )
        self.precision = meta.get("precision", "fp32")

    @classmethod
    def cached(
        cls,
        precision: ExportPrecision = "fp32",
        *,
        cache: str | Path | None = None,
        threads: int | None = None,
    ) -> OnnxEngine:
        """The engine on koel's cached export of the default weights, exporting it on first use (offline)."""
        path = ensure_export(precision, cache=cache)
        return cls(path, threads=threads)

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        results = []
        for r in requests:
            feeds = {
                "input_ids": np.asarray([r.ids], dtype=np.int64),
                "style": np.asarray(r.style, dtype=np.float32).reshape(1, -1),
                "speed": np.asarray([r.speed], dtype=np.float32),
            }
            audio, durations = self.session.run(list(OUTPUT_NAMES), feeds)
            results.append(
                EngineResult(audio=audio[0].astype(np.float32, copy=False), durations=durations[0])
            )
        return results


def ensure_export(precision: ExportPrecision = "fp32", *, cache: str | Path | None = None) -> Path:
    """Path of the cached ONNX export of the default weights; exported (about a minute) when missing or stale."""
    import koel
    from koel.export.onnx_export import export_onnx
    from koel.paths import cache_dir
    from koel.weights.loading import load_model

    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"koel-{precision}.onnx"
    stamp = path.with_suffix(".json")
    want = {"format": EXPORT_FORMAT, "koel": koel.__version__, "precision": precision}
    try:
        if path.exists() and json.loads(stamp.read_text()) == want:
            return path
    except (OSError, ValueError):
        pass
    log.warning("exporting koel's model to %s (once; about a minute)", path)
    export_onnx(load_model(cache=cache), path, precision=precision)
    stamp.write_text(json.dumps(want))
    return path


__all__ = ["OnnxEngine", "OnnxEngineError", "cpu_threads", "ensure_export"]
