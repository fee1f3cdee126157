"""Corpus reading, clip validation with a report, inference-identical phonemes, batch sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from koel.train.config import DataConfig
from koel.train.dataset import (
    DatasetError,
    GlobalBatchSampler,
    ManifestEntry,
    check_clip,
    phonemize,
    prepare_dataset,
    read_ljspeech,
)


def _write(path, audio, rate=24_000):
    import soundfile as sf

    sf.write(str(path), audio.astype(np.float32), rate)


def _tone(seconds, amp=0.2, rate=24_000):
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * 180 * t)


def test_bad_clips_are_reported_not_raised(tmp_path):
    good = tmp_path / "good.wav"
    _write(good, _tone(1.0))
    _write(tmp_path / "silent.wav", np.zeros(24_000))
    _write(tmp_path / "long.wav", _tone(3.0))
    _write(tmp_path / "short.wav", _tone(0.1))
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    rows = [
        {"audio": "good.wav", "phonemes": "hˈɛlO"},
        {"audio": "good.wav", "phonemes": "hˈɛlO", "id": "good2"},
        {"audio": "missing.wav", "phonemes": "hˈɛlO"},
        {"audio": "silent.wav", "phonemes": "hˈɛlO"},
        {"audio": "long.wav", "phonemes": "hˈɛlO"},
        {"audio": "short.wav", "phonemes": "hˈɛlO"},
        {"audio": "broken.wav", "phonemes": "hˈɛlO"},
        {"audio": "good.wav", "phonemes": "ə" * 60, "id": "wrongtext"},
        {"audio": "good.wav", "phonemes": "§§", "id": "nophonemes"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    cfg = DataConfig(path=str(manifest), holdout=1, max_seconds=2.0, min_seconds=0.3)
    data = prepare_dataset(cfg, tmp_path / "cache")
    kinds = {p.id: p.kind for p in data.report.problems}
    assert kinds == {
        "missing": "missing",
        "silent": "silent",
        "long": "length",
        "short": "length",
        "broken": "unreadable",
        "wrongtext": "text",
        "nophonemes": "text",
    }
    assert [i.id for i in data.train] == ["good"] and [i.id for i in data.val] == ["good2"]
    assert "7 left out" in data.report.summary()
    # a second run reads the cache and reports the same
    again = prepare_dataset(cfg, tmp_path / "cache")
    assert again.report.problems == data.report.problems


def test_too_few_clips_for_the_holdout(tmp_path):
    _write(tmp_path / "a.wav", _tone(1.0))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "a.wav", "phonemes": "a"}))
    with pytest.raises(DatasetError, match="hold out"):
        prepare_dataset(DataConfig(path=str(manifest), holdout=4), tmp_path / "cache")


def test_ljspeech_reader(tmp_path):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "metadata.csv").write_text("LJ1|Raw 1 text.|Raw one text.\nLJ2|b|bee\n", encoding="utf-8")
    entries = read_ljspeech(tmp_path)
    assert [(e.id, e.text) for e in entries] == [("LJ1", "Raw one text."), ("LJ2", "bee")]
    assert entries[0].audio.endswith("wavs/LJ1.wav")
    assert read_ljspeech(tmp_path, text_column=1)[0].text == "Raw 1 text."


TEXTS = [
    "Printing, in the only sense with which we are at present concerned, differs from most arts.",
    "In 1464 the price was $3.50, or so Dr. Smith said.",
    "It's a short one! Is it? Yes.",
]


class _NoEngine:
    name = "none"

    def run(self, requests):  # pragma: no cover - never called
        raise AssertionError


@pytest.mark.parametrize("text", TEXTS)
def test_training_phonemes_are_the_pipelines(text, tmp_path):
    """Training must see exactly the phonemes and token ids that inference will feed the model."""
    pytest.importorskip("koel.text")
    import torch

    from koel.pipeline import Pipeline
    from koel.voices import Voice

    voice = Voice("test", torch.zeros(510, 256))
    pipe = Pipeline(_NoEngine(), voice=voice, lang="a")
    chunks = list(pipe.chunks(text, lang="a"))
    assert phonemize(text, "a") == " ".join(c.phonemes for c in chunks)
    if len(chunks) == 1:
        _write(tmp_path / "a.wav", _tone(6.0))
        item = check_clip(ManifestEntry("x", str(tmp_path / "a.wav"), text), DataConfig(), tmp_path)
        from safetensors.torch import load_file

        ids = load_file(item.cache_file)["ids"].tolist()
        assert ids == list(pipe._request(chunks[0], voice, 1.0).ids)
        assert len(item.phonemes) == len(chunks[0].phonemes)  # the voice row the pipeline will pick


def test_sampler_splits_one_global_batch_across_ranks():
    single = GlobalBatchSampler(20, 4, 1, 0, 1, seed=3, start_step=0, max_steps=10)
    ranks = [GlobalBatchSampler(20, 2, 2, r, 1, seed=3, start_step=0, max_steps=10) for r in range(2)]
    accum = GlobalBatchSampler(20, 1, 2, 0, 2, seed=3, start_step=0, max_steps=10)
    for step in range(10):
        whole = single.micro_batches(step)[0]
        assert ranks[0].micro_batches(step)[0] + ranks[1].micro_batches(step)[0] == whole
        assert {i for micro in accum.micro_batches(step) for i in micro} <= set(whole)
    resumed = GlobalBatchSampler(20, 4, 1, 0, 1, seed=3, start_step=6, max_steps=10)
    assert list(resumed) == list(single)[6:]
    epoch = [i for s in range(5) for i in single.micro_batches(s)[0]]
    assert sorted(epoch) == list(range(20))  # one epoch sees every clip once


def test_sampler_rejects_a_batch_larger_than_the_data():
    with pytest.raises(DatasetError, match="global batch"):
        GlobalBatchSampler(3, 2, 2, 0, 1, 0, 0, 1)
