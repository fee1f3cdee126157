"""Pick the fastest available engine for this machine (overridable), and tune the process for it.

Engines, fastest first on the CPUs measured in bench/speed.py:

* ``fast``  PyTorch with :func:`koel.model.fast.accelerate` (block-DFT long kernels, fused AdaIN + Snake,
  bf16 convolutions where the CPU or GPU runs them natively); CUDA or MPS when present;
* ``onnx``  ONNX Runtime on koel's own fp32 export (exported once into the cache, offline);
* ``torch`` the reference PyTorch model, eager fp32.

``default_engine()`` takes ``prefer`` (or the ``KOEL_ENGINE`` environment variable) to override the
choice, and ``device`` (or ``KOEL_DEVICE``) to pin the PyTorch device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Iterator

import numpy as np
import torch

from koel.backends.base import Engine, EngineRequest
from koel.backends.torch_engine import TorchEngine, select_device
from koel.model import KokoroModel

log = logging.getLogger(__name__)

ENGINES = ("fast", "onnx", "torch")


class EngineChoiceError(ValueError):
    """An unknown engine name was asked for."""


class FastTorchEngine(TorchEngine):
    """The PyTorch engine on the accelerated model (same parameters, faster blocks).

    ``max_batch`` defaults to 1 on CPU, where padded batches lower throughput (bench/speed.py:
    0.6x at batches of 8 on 2 cores), and to 8 on GPUs.
    """

    name = "fast"

    def __init__(self, model: KokoroModel, *, precision: str = "auto", max_batch: int | None = None) -> None:
        from koel.model.fast import accelerate

        self.dtype = accelerate(model, precision)
        if max_batch is None:
            max_batch = 1 if model.device.type == "cpu" else 8
        super().__init__(model, max_batch=max_batch)

    def stream(
        self, request: EngineRequest, *, first_frames: int = 80, frames: int | None = None
    ) -> tuple[np.ndarray, Iterator[np.ndarray]]:
        """(durations, audio pieces) of one utterance, its generator run in time tiles (early first audio).

        The first piece covers ``first_frames`` generator frames (80 per second of audio), the rest
        come in pieces of ``frames`` (default: the rest in one piece). Tiles normalise over their own
        span, an approximation of the untiled audio (see :func:`koel.model.fast.stream_tiles`).
        """
        from koel.model.fast import stream_tiles

        ids = torch.tensor([request.ids])
        style = torch.as_tensor(request.style, dtype=torch.float32).reshape(1, -1)
        tiles = stream_tiles(
            self.model, ids, style, request.speed, first_frames=first_frames, frames=frames or 1 << 30
        )
        return tiles.durations.cpu().numpy(), (piece.cpu().numpy() for piece in tiles.pieces)


_TUNED = False


def tune_cpu_process(threads: int | None = None) -> None:
    """Thread count and allocator settings for CPU inference in this process (idempotent).

    * ``threads`` (default: the CPUs this process may use) for torch's intra-op pool;
    * glibc malloc keeps freed blocks instead of unmapping them, so the large activations of every
      layer reuse warm pages rather than page-faulting fresh ones: about 10% faster on CPU, at the
      cost of keeping the peak heap mapped.
    """
    global _TUNED
    from koel.backends.onnx_engine import cpu_threads

    torch.set_num_threads(threads or cpu_threads())
    if _TUNED:
        return
    _TUNED = True
    name = ctypes.util.find_library("c")
    if not name or os.environ.get("KOEL_KEEP_MALLOC"):
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 1 << 30)
    log.debug("malloc tuned for large reused activations")


def available_engines() -> list[str]:
    """Engine names that can run here (onnxruntime is optional at run time)."""
    names = ["fast", "torch"]
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return names
    return ["fast", "onnx", "torch"]


def default_engine(
    prefer: str | None = None,
    device: str | None = None,
    *,
    precision: str = "auto",
    threads: int | None = None,
    model: KokoroModel | None = None,
    source: str | None = None,
) -> Engine:
    """The engine to synthesise with: ``prefer`` ('auto', 'fast', 'onnx', 'torch') or the fastest here.

    ``model`` reuses an already loaded model for the PyTorch engines (it is accelerated in place by
    'fast'); otherwise the weights come from ``source`` (see :func:`koel.weights.loading.load_model`;
    for 'onnx', a koel ``.onnx`` export, or nothing for the cached export of the default weights).
    ``precision`` ('auto', 'fp32', 'bf16') applies to 'fast'. ``device`` (or ``KOEL_DEVICE``) pins the
    PyTorch device; by default CUDA, then Apple MPS, then the CPU.
    """
    choice = (prefer or os.environ.get("KOEL_ENGINE") or "auto").lower()
    if choice not in ("auto", *ENGINES):
        raise EngineChoiceError(f"unknown engine {choice!r}: choose auto, {', '.join(ENGINES)}")
    dev = select_device(device or os.environ.get("KOEL_DEVICE"))
    if choice == "auto":
        choice = "fast"  # fastest on every device measured (bench/speed.py)
    if dev.type == "cpu":
        tune_cpu_process(threads)
    if choice == "onnx":
        from koel.backends.onnx_engine import OnnxEngine

        if dev.type != "cpu":
            log.info("the onnx engine runs on the CPU; use 'fast' or 'torch' for %s", dev)
        if source is None or str(source) == "default":
            return OnnxEngine.cached(threads=threads)
        if not str(source).endswith(".onnx"):
            raise EngineChoiceError(
                f"the onnx engine runs a koel ONNX export, not {source!r}: "
                f"write one with 'koel export --model {source} -o koel.onnx' and pass --model koel.onnx"
            )
        return OnnxEngine(source, threads=threads)
    if source is not None and str(source).endswith(".onnx"):
        raise EngineChoiceError(f"{source} is an ONNX file: use it with --engine onnx")
    if model is None:
        from koel.weights.loading import load_model

        model = load_model(source, device=dev)
    else:
        model = model.to(dev)
    log.info("engine %s on %s", choice, dev)
    if choice == "fast":
        return FastTorchEngine(model, precision=precision)
    return TorchEngine(model)


__all__ = [
    "ENGINES",
    "EngineChoiceError",
    "FastTorchEngine",
    "available_engines",
    "default_engine",
    "tune_cpu_process",
]
