"""A synthetic corpus for training tests: short harmonic 'vowels' with made-up phonemes, in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

PHONEMES = ["hˈɛlO wˈɜɹld", "ðə kˈæt sˈæt", "ɡˈʊd mˈɔɹnɪŋ", "wˈʌn tˈu θɹˈi", "sˈO lˈɔŋ", "jˈɛs pliz"]


def make_corpus(folder: Path, n: int = 6, rate: int = 22_050, seconds: float = 0.9) -> Path:
    """Write ``n`` wavs (a gliding harmonic tone plus noise bursts) and a JSONL manifest."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        dur = seconds + 0.1 * i
        t = np.arange(int(dur * rate)) / rate
        f0 = 120 + 40 * i + 30 * np.sin(2 * np.pi * 1.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 2 * t) > -0.3)
        audio = 0.2 * voiced + 0.02 * rng.standard_normal(len(t))
        path = folder / f"clip{i}.wav"
        sf.write(str(path), audio.astype(np.float32), rate)
        lines.append(
            json.dumps(
                {"audio": path.name, "text": "", "phonemes": PHONEMES[i % len(PHONEMES)]}, ensure_ascii=False
            )
        )
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))
