"""``koel voice ...``: files land where they should, bad input never leaves a voice file behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koel.cli import main
from koel.voices import load_voice_file

from .conftest import RATE, babble


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_blend_writes_the_average(shared_voices, tmp_path, capsys):
    out = tmp_path / "mix.pt"
    code, err = _run(capsys, "voice", "blend", "af_heart:0.75+bf_emma:0.25", "--name", "mix", "-o", str(out))
    assert code == 0, err
    expected = (
        0.75 * load_voice_file(shared_voices / "af_heart.pt").pack
        + 0.25 * load_voice_file(shared_voices / "bf_emma.pt").pack
    )
    torch.testing.assert_close(load_voice_file(out).pack, expected)
    assert torch.load(out, weights_only=True).shape == (510, 1, 256)  # the official layout


def test_default_target_is_the_voices_folder(shared_voices, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KOEL_VOICES_DIR", str(tmp_path))
    for name in ("af_heart", "am_adam"):
        (tmp_path / f"{name}.pt").write_bytes((shared_voices / f"{name}.pt").read_bytes())
    code, err = _run(capsys, "voice", "interpolate", "af_heart", "am_adam", "--t", "0.3", "--name", "mid")
    assert code == 0, err
    assert (tmp_path / "mid.pt").is_file()
    code, err = _run(capsys, "voice", "interpolate", "af_heart", "am_adam", "--name", "mid")
    assert code == 2 and "--force" in err
    code, err = _run(capsys, "voice", "blend", "af_heart,am_adam", "--name", "af_heart")
    assert code == 2 and "official voice name" in err
    monkeypatch.delenv("KOEL_VOICES_DIR")
    code, err = _run(
        capsys, "voice", "blend", "af_heart,am_adam", "--name", "x", "--voices-dir", str(tmp_path / "no")
    )
    assert code == 2 and "unknown voice" in err


def test_no_voices_folder_needs_output(capsys, monkeypatch):
    monkeypatch.delenv("KOEL_VOICES_DIR", raising=False)
    code, err = _run(capsys, "voice", "blend", "af_heart", "--name", "x")
    assert code == 2 and "KOEL_VOICES_DIR" in err


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("silence", "silent"),
        ("noise", "does not sound like speech"),
        ("tone", "held tone or music"),
        ("one_second", "s of speech"),
        ("corrupt", "cannot read"),
        ("low_rate", "too low"),
    ],
)
def test_create_refuses_bad_references_without_writing(kind, message, tmp_path, write_wav, capsys):
    rng = np.random.default_rng(0)
    t = np.arange(4 * RATE) / RATE
    if kind == "corrupt":
        path = tmp_path / "bad.wav"
        path.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    else:
        audio, rate = {
            "silence": (np.zeros(4 * RATE), RATE),
            "noise": (rng.normal(0, 0.1, 4 * RATE), RATE),
            "tone": (0.3 * np.sin(2 * np.pi * 220 * t), RATE),
            "one_second": (babble(1.0, seed=1), RATE),
            "low_rate": (babble(4.0, rate=4_000), 4_000),
        }[kind]
        path = write_wav(f"{kind}.wav", audio.astype(np.float32), rate=rate)
    out = tmp_path / "voice.pt"
    code, err = _run(
        capsys, "voice", "create", str(path), "--name", "new", "-o", str(out), "--transcribe", "no"
    )
    assert code == 2
    assert message in err
    assert not out.exists()
    assert not list(tmp_path.glob("*.pt*"))


def test_create_checks_transcript_count(tmp_path, write_wav, capsys):
    a = write_wav("a.wav", babble(4.0))
    code, err = _run(
        capsys,
        "voice",
        "create",
        a,
        "--name",
        "n",
        "-o",
        str(tmp_path / "n.pt"),
        "--text",
        "x",
        "--text",
        "y",
    )
    assert code == 2 and "one per recording" in err


def test_create_writes_name_pt_into_the_voices_folder(tmp_path, write_wav, capsys, monkeypatch):
    """The command's wiring, with the optimisation faked: default target, -o, progress, summary."""
    import koel.clone
    import koel.clone_cli
    from koel.clone import CloneResult
    from koel.clone.objective import ReferenceTargets
    from koel.voices import Voice

    calls: list[dict] = []

    def fake_create(clips, *, name, transcripts, model, store, options, progress):
        calls.append({"clips": clips, "transcripts": transcripts, "options": options})
        for i in range(1, options.steps + 1):
            progress("optimise", i, options.steps, {"loss": 1.0 / i, "speaker": 0.2})
        pack = torch.randn(510, 256, generator=torch.Generator().manual_seed(0)) * 0.1
        targets = ReferenceTargets(torch.ones(256) / 16, torch.zeros(80), 7.6, 0.2, None)
        return CloneResult(Voice(name, pack, "created"), 0.85, [("af_sarah", 0.7)], targets, "given")

    monkeypatch.setattr(koel.clone, "create_voice", fake_create)
    monkeypatch.setattr(koel.clone_cli, "_model", lambda args: None)
    voices = tmp_path / "voices"
    monkeypatch.setenv("KOEL_VOICES_DIR", str(voices))
    ref = write_wav("me.wav", babble(12.0, seed=4))
    code, err = _run(
        capsys, "voice", "create", ref, "--name", "me", "--text", "Hello there.", "--steps", "20"
    )
    assert code == 0, err
    assert load_voice_file(voices / "me.pt").pack.shape == (510, 256)
    assert "optimise 10/20" in err and "optimise 20/20" in err  # progress on a non-terminal
    assert "similarity 0.850" in err and "af_sarah" in err and "--voice me" in err
    assert calls[0]["transcripts"] == ["Hello there."] and calls[0]["options"].steps == 20
    elsewhere = tmp_path / "out" / "me2.pt"
    code, err = _run(capsys, "voice", "create", ref, "--name", "me2", "-o", str(elsewhere), "-q")
    assert code == 0, err
    assert elsewhere.is_file() and not (voices / "me2.pt").exists()
    assert "optimise" not in err
    code, err = _run(capsys, "voice", "create", ref, "--name", "t", "--text-file", str(tmp_path / "none.txt"))
    assert code == 2 and "cannot read the transcript file" in err
    code, err = _run(capsys, "voice", "create", ref, "--name", "../evil")
    assert code == 2 and "no folders" in err
    code, err = _run(capsys, "voice", "create", ref, "--name", "x", "-o", str(tmp_path / "x.wav"))
    assert code == 2 and ".pt" in err
