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

import logging
import os
from collections.abc import Iterator

import numpy as np
import torch

from koel.backends.base import Engine, EngineRequest, EngineResult
from koel.backends.torch_engine import TorchEngine, select_device
from koel.model import KokoroModel
from koel.model.fast import TilePrior, tile_window

log = logging.getLogger(__name__)

ENGINES = ("fast", "onnx", "torch")
#: Generator tiles on CPU: utterances longer than CPU_WHOLE_FRAMES (5 s of audio) run their generator
#: in tiles of at most CPU_TILE_FRAMES (2.5 s), all about the same width, so a long text reuses the same
#: heap blocks chunk after chunk (bench/longform.py memory; see koel.memory). Quality in bench/tiling.py.
CPU_TILE_FRAMES = 200
CPU_WHOLE_FRAMES = 400
#: Bump when the statistics a tile prior holds change meaning (cached priors are then remade).
TILE_PRIOR_VERSION = "2"


class EngineChoiceError(ValueError):
    """An unknown engine name was asked for."""


class FastTorchEngine(TorchEngine):
    """The PyTorch engine on the accelerated model (same parameters, faster blocks).

    ``max_batch`` defaults to 1 on CPU, where padded batches lower throughput (bench/speed.py:
    0.6x at batches of 8 on 2 cores), and to 8 on GPUs.

    ``tile_frames`` (default ``KOEL_TILE_FRAMES`` or :data:`CPU_TILE_FRAMES` on CPU, off on GPUs) bounds memory on long
    chunks: a CPU utterance longer than ``whole_frames`` generator frames (80 per second of audio;
    default :data:`CPU_WHOLE_FRAMES`, at least ``tile_frames``) runs its generator in crossfaded time
    tiles of at most ``tile_frames`` (:func:`koel.model.fast.generate_tiles`), so the activations
    (about 21 MB live per second of audio) stay those of one tile. Shorter utterances are untiled.

    ``int8_text`` runs PL-BERT's products in int8 where its weights are exact int8 (the embedded
    weights are); None: on unless ``KOEL_INT8_TEXT=0`` (see :func:`koel.model.fast.accelerate`).
    ``half_weights`` keeps the float32 kernel's packed weights in float16 (products in float32);
    None: on unless ``KOEL_HALF_WEIGHTS=0`` (same place).
    """

    name = "fast"

    def __init__(
        self,
        model: KokoroModel,
        *,
        precision: str = "auto",
        max_batch: int | None = None,
        tile_frames: int | None = None,
        whole_frames: int | None = None,
        int8_text: bool | None = None,
        half_weights: bool | None = None,
    ) -> None:
        from koel.memory import trim
        from koel.model.fast import FastLinear, accelerate, holds_half_weights

        self.dtype = accelerate(model, precision, int8_text=int8_text, half_weights=half_weights)
        #: whether PL-BERT runs in int8 (it moves a few durations, so tile priors are kept apart)
        self.int8_text = any(isinstance(m, FastLinear) and m.int8 is not None for m in model.bert.modules())
        #: whether the compiled products read float16 weights (tile priors kept apart for the same reason)
        self.half_weights = holds_half_weights(model)
        # Building the fast blocks (block-DFT spectra in float64, packed weights) frees about 300 MB of
        # temporaries that glibc would keep under koel's trim threshold: a server at rest kept them.
        trim()
        cpu = model.device.type == "cpu"
        if max_batch is None:
            max_batch = 1 if cpu else 8
        if tile_frames is None:
            tile_frames = int(os.environ.get("KOEL_TILE_FRAMES", CPU_TILE_FRAMES)) if cpu else 0
        if tile_frames < 0:
            raise ValueError(f"tile_frames must be >= 0 (0: never tile), got {tile_frames}")
        self.tile_frames = tile_frames
        if whole_frames is not None and whole_frames < 0:
            raise ValueError(f"whole_frames must be >= 0, got {whole_frames}")
        self.whole_frames = max(tile_frames, CPU_WHOLE_FRAMES if whole_frames is None else whole_frames)
        self._fingerprint: str | None = None
        super().__init__(model, max_batch=max_batch)

    def _run_batch(self, requests: list[EngineRequest]) -> list[EngineResult]:
        if len(requests) > 1 or not self.tile_frames:
            return super()._run_batch(requests)
        durations, pieces = self.stream(requests[0])
        return [EngineResult(audio=np.concatenate(list(pieces)), durations=durations)]

    def stream(
        self,
        request: EngineRequest,
        *,
        first_frames: int | None = None,
        frames: int | None = None,
        growth: float = 1.0,
        prior: TilePrior | None = None,
    ) -> tuple[np.ndarray, Iterator[np.ndarray]]:
        """(durations, audio pieces) of one utterance, its generator run in time tiles.

        By default the tiles bound memory: utterances up to ``whole_frames`` come in one piece, longer
        ones in equal tiles of at most ``tile_frames``, each computed on a window of the same width
        (so every long utterance reuses the same heap blocks and convolution primitives). A
        ``long_form`` request (a later chunk of a long text) is computed whole only if it fits in
        one such window: over the first 100 chunks of bench/longform.py's 20,000-word text, chunks of
        about 5 s computed whole raised memory the most (260-400 MB within one chunk, against
        190-260 MB for chunks made of tiles).

        ``first_frames`` asks for early first audio instead: the first piece covers that many
        generator frames (80 per second of audio), each next one is ``growth`` times longer, up to
        ``frames`` (default: ``tile_frames``, or the rest in one piece when tiling is off), and
        ``prior`` (from :meth:`tile_prior`) starts the tiles' AdaIN statistics from a calibration
        utterance of the same voice, so a short first tile still sounds like the untiled audio.

        Tiled audio approximates the untiled audio (AdaIN statistics, see
        :func:`koel.model.fast.generate_tiles`).
        """
        from koel.model.fast import stream_tiles

        ids = torch.tensor([request.ids])
        style = torch.as_tensor(request.style, dtype=torch.float32).reshape(1, -1)
        frames = frames or self.tile_frames or 1 << 30
        if first_frames is None:  # bounded memory
            whole = self.whole_frames
            if request.long_form and self.tile_frames:  # nothing wider than one tile's window
                whole = min(whole, tile_window(frames))
            tiles = stream_tiles(
                self.model,
                ids,
                style,
                request.speed,
                first_frames=frames,
                frames=frames,
                whole=whole,
                fixed_width=bool(self.tile_frames),
            )
        else:  # early first audio
            tiles = stream_tiles(
                self.model,
                ids,
                style,
                request.speed,
                first_frames=first_frames,
                frames=frames,
                growth=growth,
                prior=prior,
            )
        return tiles.durations.cpu().numpy(), (piece.cpu().numpy() for piece in tiles.pieces)

    def tile_prior(self, request: EngineRequest) -> TilePrior:
        """AdaIN statistics of ``request`` synthesised whole, to pass as :meth:`stream`'s ``prior``
        for other utterances of the same voice (one synthesis without its inverse transform).

        Kept under ``<koel cache>/tiles``, keyed by the weights and the request, so a new process
        (``koel say --stream``) reads it instead of synthesising the calibration again.
        """
        import hashlib

        from koel.clone.cache import cache_path, load_cached, model_fingerprint, save_cached
        from koel.model.fast import tile_prior

        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        style = np.ascontiguousarray(request.style, dtype=np.float32)
        digest = hashlib.sha256(np.asarray(request.ids, dtype=np.int64).tobytes() + style.tobytes())
        path = cache_path(
            "prior",
            TILE_PRIOR_VERSION,
            self._fingerprint,
            digest.hexdigest(),
            repr(request.speed),
            "int8-text" if self.int8_text else "float-text",
            "half-weights" if self.half_weights else "float-weights",
            folder="tiles",
        )
        state = load_cached(path)
        if state is not None:
            try:
                stored = TilePrior.from_state(state)
                stored.check(self.model.decoder)
                return stored
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("recomputing the tile prior in %s (%s)", path, exc)
        ids = torch.tensor([request.ids])
        prior = tile_prior(self.model, ids, torch.from_numpy(style).reshape(1, -1), request.speed)
        save_cached(path, prior.state())
        return prior


_TUNED = False


def tune_cpu_process(threads: int | None = None) -> None:
    """Thread count and allocator policy for CPU inference in this process (idempotent).

    * ``threads`` (default: the CPUs this process may use) for torch's intra-op pool;
    * koel's allocator policy (:func:`koel.memory.tune_malloc`), unless ``KOEL_KEEP_MALLOC`` is set.
    """
    global _TUNED
    from koel.backends.onnx_engine import cpu_threads

    torch.set_num_threads(threads or cpu_threads())
    if _TUNED:
        return
    _TUNED = True
    if not os.environ.get("KOEL_KEEP_MALLOC"):
        from koel.memory import tune_malloc

        tune_malloc()


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
    "CPU_TILE_FRAMES",
    "CPU_WHOLE_FRAMES",
    "ENGINES",
    "EngineChoiceError",
    "FastTorchEngine",
    "available_engines",
    "default_engine",
    "tune_cpu_process",
]
