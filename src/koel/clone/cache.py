"""Small derived results (probe embeddings, edit directions, tile priors) kept under ``<koel cache>``.

Entries are keyed by a hash of everything they depend on (voice packs, model weights, probe text),
written atomically, loaded with ``weights_only=True``, and silently recomputed when unreadable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from koel.model import KokoroModel
from koel.paths import cache_dir

log = logging.getLogger(__name__)


def model_fingerprint(model: KokoroModel) -> str:
    """A short hash of a few weights: different weights give different voice renderings."""
    h = hashlib.sha256()
    for module in (model.bert_encoder, model.decoder.generator.conv_post, model.predictor.duration_proj):
        for p in module.parameters():
            h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_path(kind: str, *parts: str, cache: Path | None = None, folder: str = "clone") -> Path:
    """``<cache>/<folder>/<kind>-<hash of parts>.pt``."""
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
    return (cache or cache_dir()) / folder / f"{kind}-{key}.pt"


def load_cached(path: Path) -> dict[str, Any] | None:
    """The stored dict, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
        return None
    return data if isinstance(data, dict) else None


def save_cached(path: Path, data: dict[str, Any]) -> None:
    """Write atomically; a cache that cannot be written only costs time later."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(data, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        log.warning("could not write cache entry %s (%s)", path, exc)
