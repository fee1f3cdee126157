"""The engine interface: token ids + style row + speed in, audio + durations out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EngineRequest:
    """One utterance: ids wrapped in boundary tokens, a [256] style row, and a speed factor.

    ``long_form`` marks an utterance that is one of many (a later chunk of a long text): an engine
    may then trade a little speed for memory that stays flat over the whole text.
    """

    ids: tuple[int, ...]
    style: np.ndarray
    speed: float = 1.0
    long_form: bool = False


@dataclass(frozen=True)
class EngineResult:
    audio: np.ndarray  # float32 [600 * sum(durations)]
    durations: np.ndarray  # int64 [len(ids)] frames per token, boundary tokens included


class Engine(Protocol):
    name: str

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """Synthesize several utterances (batched where the engine gains from it)."""
        ...
