"""Voice creation and editing with the real Kokoro-82M weights (slow: a few minutes on one core)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.shared]

BANK = ("af_heart", "af_bella", "af_sarah", "af_nicole", "bf_emma", "bf_lily", "am_adam", "bm_george")


@pytest.fixture(scope="module")
def frozen(real_model):
    from koel.clone.render import freeze

    return freeze(real_model)


def test_created_voice_beats_its_bank_and_speaks(frozen, ljspeech, shared_voices, tmp_path):
    from koel.backends import TorchEngine
    from koel.clone import CloneOptions, create_voice, official_bank
    from koel.pipeline import Pipeline
    from koel.voices import VoiceStore, save_voice

    with open(ljspeech / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE))[:3]
    store = VoiceStore(shared_voices, allow_download=False)
    seen: list[str] = []
    result = create_voice(
        [str(ljspeech / "wavs" / f"{r[0]}.wav") for r in rows],
        transcripts=[r[2] for r in rows],
        name="lj_quick",
        model=frozen,
        bank=official_bank(store, names=BANK),
        options=CloneOptions(steps=12, candidates=4),
        progress=lambda stage, i, n, terms: seen.append(stage),
    )
    assert "screen" in seen and seen.count("optimise") == 12  # screening reports even when cached
    assert result.voice.pack.shape == (510, 256)
    assert result.transcript_source == "given"
    assert result.targets.phonemes_per_second is not None and 8 < result.targets.phonemes_per_second < 25
    best_name, best = result.best_official
    assert result.similarity > best + 0.02, f"created {result.similarity:.3f} vs {best_name} {best:.3f}"
    assert all(math.isfinite(h["loss"]) for h in result.history)
    path = save_voice(result.voice, tmp_path / "lj_quick.pt")
    pipe = Pipeline(TorchEngine(frozen), voice="lj_quick", voices=VoiceStore(tmp_path, allow_download=False))
    audio = pipe.synthesize("A new voice, ready to use.").audio
    assert path.is_file() and len(audio) > 12_000 and np.isfinite(audio).all()
    assert float(np.sqrt(np.mean(audio**2))) > 0.01


EDIT_BANK = (
    *BANK,
    "af_kore",
    "af_river",
    "am_michael",
    "am_echo",
    "bm_lewis",
    "bf_alice",
    "am_puck",
    "af_sky",
)


@pytest.fixture(scope="module")
def directions(frozen, shared_voices, tmp_path_factory):
    from koel.clone import edit_directions, official_bank
    from koel.voices import VoiceStore

    cache = tmp_path_factory.mktemp("clone-cache")
    bank = official_bank(VoiceStore(shared_voices, allow_download=False), names=EDIT_BANK)
    fitted = edit_directions(frozen, bank, cache=cache)
    assert len(list((cache / "clone").glob("directions-*.pt"))) == 1
    again = edit_directions(frozen, bank, cache=cache)  # read back, not re-measured
    torch.testing.assert_close(again.directions, fitted.directions)
    return fitted


def test_edit_moves_pitch_and_keeps_rate(frozen, shared_voices, directions):
    from koel.clone import edit_voice, measure_voice
    from koel.voices import VoiceStore

    store = VoiceStore(shared_voices, allow_download=False)
    assert directions.directions.shape == (3, 128)
    assert directions.fit_r2[0] > 0.8, f"pitch is not linear in the style: R^2 {directions.fit_r2}"
    heart = store.find("af_heart")
    higher, before, after = edit_voice(frozen, heart, directions, pitch=2.0, name="heart_up")
    shift = 12 * math.log2(after.pitch_hz / before.pitch_hz)
    assert abs(shift - 2.0) < 0.3, f"asked +2 semitones, measured {shift:+.2f}"
    assert abs(math.log(after.phonemes_per_second / before.phonemes_per_second)) < 0.05
    torch.testing.assert_close(higher.pack[:, :128], heart.pack[:, :128])  # timbre half untouched
    assert measure_voice(frozen, higher.pack) == after  # what it reports is what the pack does
    _, _, fast = edit_voice(frozen, heart, directions, rate=1.15)
    assert abs(fast.phonemes_per_second / before.phonemes_per_second - 1.15) < 0.04
    assert abs(12 * math.log2(fast.pitch_hz / before.pitch_hz)) < 0.5
    assert measure_voice(frozen, store.find("am_adam").pack).pitch_hz < 0.75 * before.pitch_hz


def test_cli_edit_lowers_pitch_and_slows_down(
    frozen, shared_voices, directions, tmp_path, capsys, monkeypatch
):
    """``koel voice edit``: the written voice measures lower and slower than the original."""
    import koel.clone
    import koel.clone_cli
    from koel.cli import main
    from koel.clone import measure_voice
    from koel.voices import VoiceStore, load_voice_file

    monkeypatch.setattr(koel.clone_cli, "_model", lambda args: frozen)
    monkeypatch.setattr(koel.clone, "edit_directions", lambda model, bank: directions)
    out = tmp_path / "heart_low.pt"
    argv = [
        "voice",
        "edit",
        "af_heart",
        "--pitch",
        "-3",
        "--rate",
        "0.9",
        "--name",
        "heart_low",
        "-o",
        str(out),
    ]
    code = main([*argv, "--voices-dir", str(shared_voices)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "before:" in err and "after:" in err
    before = measure_voice(frozen, VoiceStore(shared_voices, allow_download=False).find("af_heart").pack)
    after = measure_voice(frozen, load_voice_file(out).pack)
    shift = 12 * math.log2(after.pitch_hz / before.pitch_hz)
    assert -3.5 < shift < -2.5, f"asked -3 semitones, measured {shift:+.2f}"
    ratio = after.phonemes_per_second / before.phonemes_per_second
    assert 0.86 < ratio < 0.94, f"asked rate x0.9, measured x{ratio:.3f}"
    code = main([*argv, "--voices-dir", str(shared_voices), "--pitch", "0", "--rate", "1"])
    assert code == 2 and "nothing to change" in capsys.readouterr().err
