"""Fixtures for voice-creation tests: synthetic speech-like and non-speech signals, tiny packs."""

from __future__ import annotations

import numpy as np
import pytest

RATE = 24_000


def babble(seconds: float, seed: int = 0, rate: int = RATE, f0: float = 200.0) -> np.ndarray:
    """Speech-like audio: voiced syllables with gliding pitch, noise 'consonants' and short pauses."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    total = 0
    while total < seconds * rate:
        n = int(rng.uniform(0.12, 0.25) * rate)
        start, end = f0 * rng.uniform(0.8, 1.25), f0 * rng.uniform(0.8, 1.25)
        track = np.linspace(start, end, n)
        phase = 2 * np.pi * np.cumsum(track) / rate
        voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
        envelope = np.sin(np.linspace(0, np.pi, n)) ** 0.5
        pieces.append(0.25 * voiced * envelope)
        fricative = int(rng.uniform(0.04, 0.09) * rate)
        pieces.append(rng.normal(0, 0.03, fricative))
        if rng.random() < 0.25:
            pieces.append(np.zeros(int(0.15 * rate)))
        total += sum(len(p) for p in pieces[-3:])
    return np.concatenate(pieces)[: int(seconds * rate)].astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Optimisation steps are many small ops: on a shared machine one thread is up to 10x faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def speechlike() -> np.ndarray:
    return babble(6.0)


@pytest.fixture()
def write_wav(tmp_path):
    import soundfile as sf

    def write(name: str, audio: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> str:
        path = tmp_path / name
        sf.write(str(path), audio, rate, subtype=subtype)
        return str(path)

    return write
