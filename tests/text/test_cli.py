"""``koel phonemize``."""

from __future__ import annotations

import argparse

import pytest
from fe_helpers import have

from koel.text.cli import main_phonemize, register

pytestmark = pytest.mark.skipif(not have("a"), reason="English G2P packages not installed")


def test_main_prints_phonemes(capsys) -> None:
    assert main_phonemize(["It is 9:30."]) == 0
    assert capsys.readouterr().out.strip() == "ˌɪt ɪz nˈIn θˈɜɹTi."


def test_file_lexicon_raw_and_chunks(tmp_path, capsys) -> None:
    f = tmp_path / "in.txt"
    f.write_text("Hello koel. Bye.", encoding="utf-8")
    lex = tmp_path / "lex.tsv"
    lex.write_text("koel\tkˈOəl\n", encoding="utf-8")
    assert main_phonemize(["--file", str(f), "--lexicon", str(lex), "--chunks"]) == 0
    line = capsys.readouterr().out.strip().split("\t")
    assert line[0] == "0" and "kˈOəl" in line[3] and line[4] == "Hello koel. Bye."
    assert main_phonemize(["--raw", "həlˈO ʘ"]) == 0
    assert capsys.readouterr().out.strip() == "həlˈO"


def test_errors_exit_2(capsys) -> None:
    assert main_phonemize(["hi", "--lang", "xx"]) == 2
    assert "unknown language" in capsys.readouterr().err


def test_register_subcommand(capsys) -> None:
    parser = argparse.ArgumentParser(prog="koel")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phonemize", "Hi!", "--lang", "en-gb"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == "hˈI!"
