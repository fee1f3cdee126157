"""A tiny deterministic engine for tests of everything above the model (pipeline, CLI, server).

Durations come from the token ids, audio is a quiet tone per token: the shapes and timing rules
match the real model (600 samples per frame), and it runs in microseconds.
"""

from __future__ import annotations

import numpy as np

from koel.backends.base import EngineRequest, EngineResult
from koel.constants import FRAME_SAMPLES, SAMPLE_RATE


class FakeEngine:
    name = "fake"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.utterances = 0
        self.fail_after = fail_after

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        self.calls += 1
        out = []
        for r in requests:
            if self.fail_after is not None and self.utterances >= self.fail_after:
                raise RuntimeError("fake engine stopped on purpose (simulated crash)")
            self.utterances += 1
            ids = np.asarray(r.ids, dtype=np.int64)
            durations = np.maximum(1, np.round((1 + ids % 4) / r.speed)).astype(np.int64)
            t = np.arange(int(durations.sum()) * FRAME_SAMPLES) / SAMPLE_RATE
            freq = 110.0 + 2.0 * np.repeat(ids, durations * FRAME_SAMPLES)
            audio = (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            out.append(EngineResult(audio=audio, durations=durations))
        return out
