"""The README's examples run as written (CLI example and Python API example)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _block(marker: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {marker}[^>]*-->\s*```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no block after <!-- {marker} -->"
    return match.group(1)


@pytest.fixture(autouse=True)
def _voice_and_model(real_model, shared_voices):
    """The examples use af_heart, which needs the official packs (../shared/voices)."""


def test_readme_cli_example(tmp_path, monkeypatch):
    from koel.audio import decode
    from koel.cli import main

    monkeypatch.chdir(tmp_path)
    command = shlex.split(_block("cli-example").strip())
    assert command[0] == "koel"
    assert main(command[1:]) == 0
    assert decode(tmp_path / "meeting.mp3")[0].size > 0
    assert "-->" in (tmp_path / "meeting.srt").read_text()


def test_readme_python_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_block("api-example"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "first word at" in out
