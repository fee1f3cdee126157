"""The koel command: files, stdin, streaming, subtitles, voices, and clear errors with exit code 2."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from koel.audio import decode
from koel.cli import main
from koel.constants import SAMPLE_RATE


@pytest.fixture(autouse=True)
def _model_ready(real_model):
    """The CLI loads the model from the session cache; make sure it was converted once."""


def test_say_writes_wav_and_subtitles(tmp_path, capsys):
    out, srt, vtt = tmp_path / "a.wav", tmp_path / "a.srt", tmp_path / "a.vtt"
    code = main(
        [
            "say",
            "Hello there. This is koel.",
            "--voice",
            "jf_alpha",
            "--lang",
            "a",
            "-o",
            str(out),
            "--srt",
            str(srt),
            "--vtt",
            str(vtt),
        ]
    )
    assert code == 0
    audio, rate = decode(out)
    assert rate == SAMPLE_RATE and len(audio) > SAMPLE_RATE // 2
    assert "-->" in srt.read_text() and vtt.read_text().startswith("WEBVTT")
    assert "wrote" in capsys.readouterr().err


def test_say_reads_a_markdown_file(tmp_path):
    md = tmp_path / "notes.md"
    md.write_text("# Title\n\nSome *emphasis* and a [link](http://x.y).\n\n- item one\n- item two\n")
    out = tmp_path / "notes.flac"
    assert main(["say", "--file", str(md), "--voice", "jf_alpha", "--lang", "a", "-o", str(out)]) == 0
    assert decode(out)[0].size > 0


def test_stream_to_stdout_is_raw_pcm():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "koel.cli",
            "say",
            "--stream",
            "--voice",
            "jf_alpha",
            "--lang",
            "a",
            "Streaming works.",
        ],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) > SAMPLE_RATE  # > 0.5 s of 16-bit samples
    assert len(proc.stdout) % 2 == 0


def test_stdin_input(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("From standard input."))
    out = tmp_path / "stdin.wav"
    assert main(["say", "--voice", "jf_alpha", "--lang", "a", "-o", str(out)]) == 0
    assert out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["say", "hi", "--voice", "no_such_voice"], "no_such_voice"),
        (["say", "hi", "--voice", "jf_alpha", "--speed", "0"], "speed"),
        (["say", "   ", "--voice", "jf_alpha"], "empty"),
        (["say", "--file", "/nonexistent/file.txt"], "cannot read"),
        (["say", "hi", "--voice", "jf_alpha", "--lang", "klingon"], "klingon"),
        (["say", "hi", "--voice", "jf_alpha", "-o", "x.xyz"], "xyz"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("koel: error:") and message in err


def test_unknown_option_exits_nonzero():
    with pytest.raises(SystemExit) as exc:
        main(["say", "--no-such-option"])
    assert exc.value.code != 0


def test_voices_lists_languages_and_sources(capsys):
    assert main(["voices"]) == 0
    out = capsys.readouterr().out
    assert "jf_alpha" in out and "Japanese" in out and "bundled" in out
