"""Training checkpoints (written atomically, read with ``weights_only``) and export to koel's format.

A training state is one file ``step-00001200.pt`` in ``<output>/checkpoints``: model, voices,
discriminators, both optimisers, the grad scaler, the step and the RNG states. It is written to a
temporary name and renamed, so a run killed at any moment leaves the previous checkpoint intact
and loses only the steps since then. The export is a normal koel checkpoint folder plus voice
files, loadable by ``load_model(folder)``, the pipeline, the server and the ONNX export.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from koel.model import KokoroModel

log = logging.getLogger(__name__)

STATE_FORMAT = "koel-train-state"
STATE_VERSION = 1
_NAME = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A training checkpoint that cannot be read or does not fit this run."""


def save_state(directory: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Atomically write ``state`` as ``step-NNNNNNNN.pt`` and delete all but the ``keep`` newest."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"step-{step:08d}.pt"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".step-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, "step": step, **state}, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for old in list_states(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return target


def list_states(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files of an interrupted write are ignored)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(str(path), map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from exc
    if (
        not isinstance(state, dict)
        or state.get("format") != STATE_FORMAT
        or state.get("version", 99) > STATE_VERSION
    ):
        raise CheckpointError(
            f"{path} is not a koel training checkpoint (format {STATE_FORMAT} v{STATE_VERSION})"
        )
    return state


def latest_state(directory: Path) -> Path | None:
    states = list_states(directory)
    return states[-1] if states else None


def export_model(
    model: KokoroModel, voices: dict[str, torch.Tensor], directory: Path, extra: dict | None = None
) -> Path:
    """Write a koel checkpoint folder (model.safetensors + config.json) and ``voices/NAME.pt`` packs."""
    from koel.constants import VOICE_DIM
    from koel.voices import save_voice
    from koel.weights.loading import save_checkpoint

    save_checkpoint(model, directory, extra={"voices": sorted(voices), **(extra or {})})
    for name, pack in voices.items():
        target = directory / "voices" / f"{name}.pt"
        if pack.shape[-1] == VOICE_DIM:
            save_voice(pack.detach().cpu(), target)
        else:  # a non-standard model width (the tiny test model): same layout, not a pipeline voice
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(pack.detach().cpu()[:, None, :].clone(), target)
    log.info("exported model and %d voice(s) to %s", len(voices), directory)
    return directory
