"""Run setup for the trainer: the process group from torchrun's environment, the model and the first voice pack."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from koel.config import ModelConfig
from koel.constants import VOICE_ROWS
from koel.model import KokoroModel
from koel.train.config import ConfigError, TrainConfig


class Distributed:
    """Rank, world size and device, from torchrun's environment (one process if it is absent)."""

    def __init__(self, device: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if not self.enabled:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object (cache keys)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_model(cfg: TrainConfig, device: torch.device) -> KokoroModel:
    init = cfg.model.init
    if init == "tiny":
        torch.manual_seed(cfg.run.seed)
        model = KokoroModel(ModelConfig.tiny())
    elif init == "random":
        torch.manual_seed(cfg.run.seed)
        model = KokoroModel(ModelConfig())
    else:
        from koel.weights.loading import load_model

        model = load_model(None if init == "default" else init, for_training=True)
    model.decoder.generator.m_source.stochastic = cfg.model.stochastic_source
    for name, module in model.named_children():
        module.requires_grad_(name in cfg.model.train_modules)
    return model.to(device)


def initial_pack(cfg: TrainConfig, voice_dim: int) -> torch.Tensor:
    spec = cfg.model.voice_init
    if spec == "zeros":
        return torch.zeros(VOICE_ROWS, voice_dim)
    from koel.voices import VoiceStore, load_voice_file

    voice = load_voice_file(spec) if Path(spec).suffix in (".pt", ".npy", ".npz") else VoiceStore().get(spec)
    if voice.pack.shape[-1] != voice_dim:
        raise ConfigError(
            f"model.voice_init {spec!r} has {voice.pack.shape[-1]} values per row; the model needs {voice_dim}"
        )
    return voice.pack
