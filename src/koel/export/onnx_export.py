"""Export koel's KokoroModel to ONNX (durations as an output, dynamic length) and check it against PyTorch.

The exported graph takes ``input_ids`` [1, T] int64 (phoneme ids wrapped in boundary tokens),
``style`` [1, 256] float32 (a voice row) and ``speed`` [1] float32, and returns ``audio`` [1, S]
float32 at 24 kHz (S = 600 * sum(durations)) and ``durations`` [1, T] int64 frames per token, the
input that word timestamps need (the official export hides it).

The graph is traced from the fast path of :mod:`koel.model.fast` in fp32 (block-DFT long
kernels, explicit AdaIN statistics), which computes the same function as the reference modules
with about half the multiply-adds. Variants: ``fp16`` (weights and activations, for GPUs)
and ``int8`` (onnxruntime dynamic quantisation, smaller file). Everything runs offline.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from koel.model import KokoroModel

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

ExportPrecision = Literal["fp32", "fp16", "int8"]
INPUT_NAMES = ("input_ids", "style", "speed")
OUTPUT_NAMES = ("audio", "durations")
DEFAULT_OPSET = 17
EXPORT_FORMAT = "koel-onnx-v1"
"""Stored in the model's metadata; the ONNX engine refuses files without it."""


class ExportError(RuntimeError):
    """The model could not be exported or the exported graph does not match PyTorch."""


class KokoroExport(nn.Module):
    """The explicit export wrapper: batch-1 synthesis written with traceable, shape-generic ops.

    It calls the model's own stage methods; only the alignment (whose frame count depends on the
    predicted durations) is rebuilt from tensor ops, so the traced graph keeps that length dynamic.
    """

    def __init__(self, model: KokoroModel) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(
        self, input_ids: torch.Tensor, style: torch.Tensor, speed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [1, T], style [1, 256], speed [1] -> audio [1, S], durations [1, T]."""
        model = self.model
        s_p = style[:, model.config.style_dim :]
        d, logits = model.prosody_features(input_ids, None, s_p)
        durations = model.durations_from_logits(logits, speed)
        ends = torch.cumsum(durations, dim=1)  # [1, T]
        frames = torch.arange(ends[0, -1], device=input_ids.device)  # type: ignore[call-overload]  # [F], F = sum(durations)
        alignment = (frames[None, None, :] >= (ends - durations)[..., None]) & (
            frames[None, None, :] < ends[..., None]
        )
        spec, _, _ = model.acoustic(input_ids, None, d, alignment.float(), style, None)
        return model.decoder.generator.spectrogram_to_audio(spec), durations


def _atan2_symbolic(g: object, y: object, x: object) -> object:
    """aten::atan2 for the TorchScript exporter with torch's quadrants (y = +0, x < 0 gives +pi).

    The stock symbolic returns -pi there. The generator feeds the STFT phase of its harmonic source
    to a convolution, so a +pi/-pi flip on real-valued bins changes the audio, not just the angle.
    """
    op = g.op  # type: ignore[attr-defined]

    def const(value: float) -> object:
        return op("Constant", value_t=torch.tensor(value, dtype=torch.float32))

    angle = op("Atan", op("Div", y, x))
    shifted = op("Add", angle, op("Where", op("Less", y, const(0.0)), const(-math.pi), const(math.pi)))
    angle = op("Where", op("Less", x, const(0.0)), shifted, angle)
    return op("Where", op("Equal", x, const(0.0)), op("Mul", op("Sign", y), const(math.pi / 2)), angle)


def _example_inputs(model: KokoroModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[0, 50, 83, 54, 156, 57, 135, 16, 65, 156, 86, 54, 46, 4, 0]])
    style = torch.randn(1, 2 * model.config.style_dim, generator=torch.Generator().manual_seed(0)) * 0.1
    return ids, style, torch.ones(1)


def export_onnx(
    model: KokoroModel,
    path: str | Path,
    *,
    precision: ExportPrecision = "fp32",
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` and return the path (``model`` is not modified).

    The graph is traced from the :func:`koel.model.fast.accelerate` modules in fp32: the same
    function as the reference modules with fewer operations, and explicit AdaIN statistics (the
    exporter cannot size ``InstanceNormalization`` after the generator's reflection pad).
    """
    from koel.model.fast import accelerate

    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().float().eval()
    model.fold_weight_norm()
    # the int8 quantiser rewrites Conv weights; the graph cannot call koel's compiled kernel
    accelerate(model, "fp32", block_dft=precision != "int8", compiled=False)
    wrapper = KokoroExport(model)
    with tempfile.TemporaryDirectory() as tmp:
        traced = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-derived Python ints are expected
            torch.onnx.register_custom_op_symbolic("aten::atan2", _atan2_symbolic, opset)
            try:
                torch.onnx.export(
                    wrapper,
                    _example_inputs(model),
                    str(traced),
                    dynamo=False,
                    input_names=list(INPUT_NAMES),
                    output_names=list(OUTPUT_NAMES),
                    dynamic_axes={
                        "input_ids": {1: "tokens"},
                        "audio": {1: "samples"},
                        "durations": {1: "tokens"},
                    },
                    opset_version=opset,
                    do_constant_folding=True,
                )
            except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
                raise ExportError(f"ONNX export failed: {exc}") from exc
            finally:
                torch.onnx.unregister_custom_op_symbolic("aten::atan2", opset)
        _finish(traced, path, precision, model)
    log.info("exported %s (%s, %.1f MB)", path, precision, path.stat().st_size / 1e6)
    return path


def _finish(traced: Path, path: Path, precision: ExportPrecision, model: KokoroModel) -> None:
    """Stamp koel's metadata on the traced fp32 graph, then convert it to ``precision``."""
    import onnx

    proto = _constants_to_initializers(onnx.load(str(traced)))
    del proto.metadata_props[:]
    for key, value in {
        "format": EXPORT_FORMAT,
        "precision": "fp32",
        "config": model.config.to_json(),
    }.items():
        proto.metadata_props.add(key=key, value=value)
    if precision == "fp32":
        onnx.save(proto, str(path))
        return
    stamped = traced.with_name("stamped.onnx")
    onnx.save(proto, str(stamped))
    convert_precision(stamped, path, precision)


def _constants_to_initializers(proto: onnx.ModelProto, min_elements: int = 16) -> onnx.ModelProto:
    """Turn large Constant nodes (traced buffers such as the fast path's weights) into initializers.

    Quantisation and fp16 conversion only rewrite initializers, and ORT can share them.
    """
    graph = proto.graph
    keep = []
    for node in graph.node:
        value = (
            next((a.t for a in node.attribute if a.name == "value"), None)
            if node.op_type == "Constant"
            else None
        )
        if value is not None and int(np.prod(value.dims)) >= min_elements:
            value.name = node.output[0]
            graph.initializer.append(value)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return proto


def convert_precision(source: str | Path, target: str | Path, precision: ExportPrecision) -> Path:
    """Write an fp16 or int8 variant of an fp32 koel export (the interface stays fp32/int64).

    ``int8``: onnxruntime dynamic quantisation (int8 weights per channel, activations quantised at
    run time), about 4x smaller. ``fp16``: weights and activations in half precision (for GPUs;
    CPUs without fp16 kernels run it slower), with the integer and phase bookkeeping kept in fp32.
    """
    import onnx

    source, target = Path(source), Path(target)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
        proto = onnx.load(str(target))
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = convert_float_to_float16(
            onnx.load(str(source)),
            keep_io_types=True,
            op_block_list=["Range", "CumSum", "Atan", "Sin", "Mod"],
        )
    elif precision == "fp32":
        proto = onnx.load(str(source))
    else:
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{source} is not a koel export")
    meta["precision"] = precision
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(target))
    return target


# -- parity ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityRow:
    """One utterance of the parity check: ONNX Runtime vs the PyTorch model on the same inputs."""

    tokens: int
    seconds: float
    durations_equal: bool
    frames_differing: int
    spectral_error: float  # relative L2 error of STFT magnitudes (phase-insensitive)


def _magnitude(audio: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio, 1024)[::256] * np.hanning(1024)
    return np.abs(np.fft.rfft(frames, axis=-1))


def spectral_error(reference: np.ndarray, other: np.ndarray) -> float:
    """Relative L2 distance of the STFT magnitudes (1024/256), over the common length."""
    n = min(len(reference), len(other))
    if n < 1024:
        return float(np.abs(reference[:n] - other[:n]).max(initial=0.0))
    a, b = _magnitude(reference[:n]), _magnitude(other[:n])
    return float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(a)), 1e-12)


def check_parity(
    model: KokoroModel,
    session: object,
    inputs: Sequence[tuple[Sequence[int], np.ndarray]],
    speed: float = 1.0,
) -> list[ParityRow]:
    """Run each (ids, style row) through ``session`` (an onnxruntime session) and the PyTorch model.

    With identical durations the audio is compared through its STFT magnitudes; the harmonic source
    integrates F0 over the whole utterance, so float rounding shifts the phase of the waveform
    while leaving the sound unchanged.
    """
    rows = []
    for ids, style in inputs:
        feeds = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "style": np.asarray(style, dtype=np.float32).reshape(1, -1),
            "speed": np.asarray([speed], dtype=np.float32),
        }
        audio, durations = session.run(list(OUTPUT_NAMES), feeds)  # type: ignore[attr-defined]
        ref = model.synthesize(torch.tensor([list(ids)]), torch.from_numpy(feeds["style"]), speed)
        ref_dur = ref.durations[0].cpu().numpy()
        same = durations[0].shape == ref_dur.shape and bool((durations[0] == ref_dur).all())
        differing = int((durations[0] != ref_dur).sum()) if durations[0].shape == ref_dur.shape else len(ids)
        ref_audio = ref.audio[0].cpu().numpy()
        rows.append(
            ParityRow(len(ids), len(ref_audio) / 24000, same, differing, spectral_error(ref_audio, audio[0]))
        )
    return rows


def format_parity(rows: Sequence[ParityRow]) -> str:
    lines = [f"{'tokens':>6s} {'seconds':>8s} {'durations':>10s} {'spectral err':>12s}"]
    for r in rows:
        dur = "equal" if r.durations_equal else f"{r.frames_differing} differ"
        lines.append(f"{r.tokens:6d} {r.seconds:8.2f} {dur:>10s} {r.spectral_error:12.5f}")
    return "\n".join(lines)


__all__ = [
    "EXPORT_FORMAT",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "ExportError",
    "ExportPrecision",
    "KokoroExport",
    "ParityRow",
    "check_parity",
    "convert_precision",
    "export_onnx",
    "format_parity",
    "spectral_error",
]
