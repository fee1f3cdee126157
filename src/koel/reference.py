"""Run the official Kokoro-82M int8 ONNX export with onnxruntime: the reference for parity tests.

The export outputs only ``audio``, but every stage of the forward pass is a named tensor inside the
graph. ``OfficialOnnxReference.intermediates`` exposes them by adding graph outputs to an in-memory
copy of the model; ``STAGE_TENSORS`` names the tensors that match the stages of our PyTorch model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from koel.constants import MAX_PHONEMES, ONNX_AUDIO_GAIN, PAD_ID, VOICE_DIM

log = logging.getLogger(__name__)

_ALBERT = "/encoder/bert/encoder/albert_layer_groups.0/albert_layers.0"

STAGE_TENSORS: dict[str, str] = {
    # [1, T, 768] ALBERT last hidden state (output of the 12th pass of the shared layer)
    "albert": f"{_ALBERT}/full_layer_layer_norm_11/LayerNormalization_output_0",
    # [1, T, 512] bert_encoder output (d_en before its transpose)
    "bert_encoder": "/encoder/bert_encoder/Add_output_0",
    # [1, T, 640] DurationEncoder output d (style re-concatenated)
    "duration_encoder": "/encoder/predictor/text_encoder/Concat_4_output_0",
    # [1, T, 50] duration_proj logits
    "duration_logits": "/encoder/predictor/duration_proj/linear_layer/Add_output_0",
    # [1, T] float durations: sum of the 50 sigmoids, before dividing by speed
    "durations_float": "/encoder/predictor/ReduceSum_output_0",
    # [1, T] float durations divided by speed, before rounding
    "durations_scaled": "/encoder/Div_output_0",
    # [1, T] int64 durations: round half to even, clamped to >= 1
    "durations": "/encoder/Cast_output_0",
    # [1, 640, F] d aligned to frames (en = d^T @ alignment)
    "aligned_prosody": "/encoder/MatMul_output_0",
    # [1, 2F] F0 curve in Hz (predictor F0_proj output, squeezed)
    "f0": "/encoder/Squeeze_output_0",
    # [1, 2F] energy curve N (predictor N_proj output, squeezed)
    "n": "/encoder/Squeeze_1_output_0",
    # [1, 512, T] TextEncoder output t_en
    "text_encoder": "/encoder/text_encoder/Transpose_2_output_0",
    # [1, 512, F] t_en aligned to frames (asr)
    "asr": "/encoder/MatMul_1_output_0",
    # [1, 512, 2F] decoder output after decode.3, the input of the generator
    "decoder": "/decoder/decoder/decode.3/Div_4_output_0",
    # [1, 600F, 1] harmonic source tanh(l_linear(sines)), deterministic in this export
    "harmonic_source": "/decoder/decoder/generator/m_source/l_tanh/Tanh_output_0",
    # [1, 22, 120F + 1] conv_post output: log-magnitude (11) and phase pre-activation (11)
    "conv_post": "/decoder/decoder/generator/conv_post/Conv_output_0",
    # [600F] final audio as the graph outputs it (ONNX_AUDIO_GAIN times louder than torch.istft)
    "audio": "audio",
}
"""Stage name -> ONNX tensor name inside the official export. T counts the two boundary tokens,
F = sum(durations) frames of 600 samples."""


def _style_array(style: np.ndarray) -> np.ndarray:
    arr = np.asarray(style, dtype=np.float32)
    if arr.size != VOICE_DIM:
        raise ValueError(
            f"style must hold {VOICE_DIM} values ([1, {VOICE_DIM}] or [{VOICE_DIM}]), got {arr.shape}"
        )
    return arr.reshape(1, VOICE_DIM)


def _tokens_array(token_ids: Sequence[int]) -> np.ndarray:
    ids = list(token_ids)
    if len(ids) < 3 or ids[0] != PAD_ID or ids[-1] != PAD_ID:
        raise ValueError(
            f"token_ids must be phoneme ids wrapped in {PAD_ID} boundary tokens, got {ids[:5]}..."
        )
    if len(ids) > MAX_PHONEMES + 2:
        raise ValueError(f"{len(ids) - 2} phonemes exceed the model limit of {MAX_PHONEMES}")
    return np.asarray([ids], dtype=np.int64)


class OfficialOnnxReference:
    """The official int8 export on the onnxruntime CPU execution provider.

    Sessions are created lazily: one for plain synthesis, and one per distinct set of requested
    intermediate tensors (cached).
    """

    def __init__(self, onnx_path: str | Path, threads: int = 2) -> None:
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self._sessions: dict[frozenset[str], ort.InferenceSession] = {}
        self._model: onnx.ModelProto | None = None
        self._types: dict[str, onnx.ValueInfoProto] = {}

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return options

    def _proto(self) -> onnx.ModelProto:
        if self._model is None:
            self._model = onnx.load(str(self.onnx_path))
            graph = self._model.graph
            self._types = {v.name: v for v in (*graph.input, *graph.output, *graph.value_info)}
        return self._model

    def _value_info(self, name: str) -> onnx.ValueInfoProto:
        if name not in self._types:
            model = self._proto()
            if not any(name in node.output for node in model.graph.node):
                raise KeyError(
                    f"{name!r} is not a tensor of the ONNX graph (stage names: {sorted(STAGE_TENSORS)})"
                )
            inferred = onnx.shape_inference.infer_shapes(model)
            self._types.update({v.name: v for v in inferred.graph.value_info})
            if name not in self._types:
                raise KeyError(f"cannot determine the type of ONNX tensor {name!r}")
        return self._types[name]

    def _session(self, extra: frozenset[str]) -> ort.InferenceSession:
        session = self._sessions.get(extra)
        if session is not None:
            return session
        if extra:
            model = onnx.ModelProto()
            model.CopyFrom(self._proto())
            existing = {o.name for o in model.graph.output}
            model.graph.output.extend(self._value_info(n) for n in sorted(extra) if n not in existing)
            source: str | bytes = model.SerializeToString()
        else:
            source = str(self.onnx_path)
        log.debug("creating onnxruntime session with %d extra outputs", len(extra))
        session = ort.InferenceSession(source, self._session_options(), providers=["CPUExecutionProvider"])
        self._sessions[extra] = session
        return session

    @staticmethod
    def _feeds(token_ids: Sequence[int], style: np.ndarray, speed: float) -> dict[str, np.ndarray]:
        return {
            "tokens": _tokens_array(token_ids),
            "style": _style_array(style),
            "speed": np.asarray([speed], dtype=np.float32),
        }

    def synthesize(
        self, token_ids: Sequence[int], style: np.ndarray, speed: float = 1.0, *, raw: bool = False
    ) -> np.ndarray:
        """Audio (float32, 24 kHz) for ``token_ids`` (already wrapped in 0 boundary tokens).

        ``style`` is a voice row, [1, 256] or [256]. The export's audio is divided by
        ``ONNX_AUDIO_GAIN`` so that it matches a correct iSTFT, unless ``raw`` is set.
        """
        session = self._session(frozenset())
        (audio,) = session.run(["audio"], self._feeds(token_ids, style, speed))
        audio = np.asarray(audio, dtype=np.float32)
        return audio if raw else audio / np.float32(ONNX_AUDIO_GAIN)

    def intermediates(
        self, token_ids: Sequence[int], style: np.ndarray, names: Iterable[str], speed: float = 1.0
    ) -> dict[str, np.ndarray]:
        """Internal tensors of one run, keyed by the names asked for.

        ``names`` are stage names of ``STAGE_TENSORS`` or raw ONNX tensor names. Values are returned
        as the graph computes them (``"audio"`` included: no gain correction here).
        """
        wanted = {name: STAGE_TENSORS.get(name, name) for name in names}
        session = self._session(frozenset(v for v in wanted.values() if v != "audio"))
        onnx_names = sorted(set(wanted.values()))
        values = dict(
            zip(onnx_names, session.run(onnx_names, self._feeds(token_ids, style, speed)), strict=True)
        )
        return {name: np.asarray(values[onnx_name]) for name, onnx_name in wanted.items()}
