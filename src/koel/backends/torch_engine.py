"""PyTorch engine: KokoroModel on CPU, CUDA or MPS, with padded batches of similar lengths."""

from __future__ import annotations

import torch

from koel.backends.base import EngineRequest, EngineResult
from koel.model import KokoroModel


def select_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given, else CUDA, then Apple MPS, then CPU."""
    if preferred:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class TorchEngine:
    name = "torch"

    def __init__(self, model: KokoroModel, *, max_batch: int = 8) -> None:
        self.model = model.eval()
        self.max_batch = max_batch

    @property
    def device(self) -> torch.device:
        return self.model.device

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        results: list[EngineResult | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].ids))
        for start in range(0, len(order), self.max_batch):
            group = order[start : start + self.max_batch]
            for i, result in zip(group, self._run_batch([requests[i] for i in group]), strict=False):
                results[i] = result
        return [r for r in results if r is not None]

    def _run_batch(self, requests: list[EngineRequest]) -> list[EngineResult]:
        width = max(len(r.ids) for r in requests)
        ids = torch.zeros(len(requests), width, dtype=torch.long)
        for b, r in enumerate(requests):
            ids[b, : len(r.ids)] = torch.tensor(r.ids)
        lengths = torch.tensor([len(r.ids) for r in requests])
        style = torch.stack([torch.as_tensor(r.style, dtype=torch.float32).reshape(-1) for r in requests])
        speed = torch.tensor([r.speed for r in requests], dtype=torch.float32)
        out = self.model.synthesize(ids, style, speed, lengths=lengths)
        return [
            EngineResult(
                audio=out.item_audio(b).float().cpu().numpy(),
                durations=out.item_durations(b).cpu().numpy(),
            )
            for b in range(len(requests))
        ]
