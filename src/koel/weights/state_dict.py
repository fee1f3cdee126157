"""Load parameter dicts of any official or koel layout into a KokoroModel, counting every key.

Three layouts reach us: plain (folded) weights ``x.weight`` (the ONNX import), legacy weight norm
``x.weight_g``/``x.weight_v`` (the official .pth), and torch parametrisations
``x.parametrizations.weight.original0/1`` (koel checkpoints). The target model may or may not have
its weight norm folded. Strict loading hides nothing: unknown and missing keys raise.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from koel.weights.errors import WeightsError

log = logging.getLogger(__name__)

# Keys of the official checkpoint that the inference model does not have (all unused there).
IGNORED_KEYS = re.compile(
    r"^bert\.pooler\.|^bert\.embeddings\.position_ids$|^bert\.embeddings\.token_type_ids$|\.norm\.(weight|bias)$"
    r"|\.norm[12]\.norm\.(weight|bias)$|\.adain[12]\.\d+\.norm\.(weight|bias)$"
)


def _norm_except_dim0(w: torch.Tensor) -> torch.Tensor:
    return w.flatten(1).norm(dim=1).reshape(-1, *([1] * (w.ndim - 1)))


def to_model_layout(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rewrite ``state`` into exactly the keys of ``model.state_dict()`` (raising on any mismatch)."""
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if key in target:
            out[key] = value
            continue
        m = re.match(r"^(.*)\.(weight|weight_g|weight_v|parametrizations\.weight\.original[01])$", key)
        base = m.group(1) if m else None
        g_key, v_key = (
            f"{base}.parametrizations.weight.original0",
            f"{base}.parametrizations.weight.original1",
        )
        plain_key = f"{base}.weight"
        if m and m.group(2) == "weight" and v_key in target:
            # Split a folded weight into g = |w| and v = w. Rows that are exactly zero (the int8
            # export rounds some whole output channels to the zero point) get g = 0 and a unit v,
            # so g * v / |v| stays 0 instead of 0 / 0.
            g = _norm_except_dim0(value)
            dead = (g == 0).expand_as(value)
            out[v_key] = torch.where(dead, torch.ones_like(value), value)
            out[g_key] = g
        elif m and m.group(2) in ("weight_g", "parametrizations.weight.original0") and g_key in target:
            out[g_key] = value
        elif m and m.group(2) in ("weight_v", "parametrizations.weight.original1") and v_key in target:
            out[v_key] = value
        elif m and m.group(2) in ("weight_g", "parametrizations.weight.original0") and plain_key in target:
            continue  # folded below, once both halves are known
        elif m and m.group(2) in ("weight_v", "parametrizations.weight.original1") and plain_key in target:
            magnitude = state.get(f"{base}.weight_g", state.get(g_key))
            if magnitude is None:
                raise WeightsError(f"weight-norm pair of {base!r} is missing its magnitude (weight_g)")
            out[plain_key] = magnitude * value / _norm_except_dim0(value).clamp(min=1e-12)
        elif IGNORED_KEYS.search(key):
            continue
        else:
            unused.append(key)
    missing = sorted(set(target) - set(out))
    if unused or missing:
        raise WeightsError(
            f"weights do not match the model: {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(unused)} unexpected (e.g. {unused[:5]})"
        )
    for key, value in out.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise WeightsError(
                f"shape mismatch for {key}: file {tuple(value.shape)}, model {tuple(target[key].shape)}"
            )
    return out


def load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strictly load ``state`` (any supported layout) into ``model``."""
    model.load_state_dict(to_model_layout(state, model), strict=True, assign=True)


def flatten_official(checkpoint: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The official kokoro-v1_0.pth layout ({module: {'module.' + key: tensor}}) -> flat dotted keys."""
    flat: dict[str, torch.Tensor] = {}
    for top, sub in checkpoint.items():
        if not isinstance(sub, dict):
            raise WeightsError(f"unexpected entry {top!r} in checkpoint: expected a state dict")
        for key, value in sub.items():
            key = key[len("module.") :] if key.startswith("module.") else key
            flat[f"{top}.{key}"] = value
    return flat
