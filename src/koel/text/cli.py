"""``koel phonemize``: print the phonemes the model would get for a text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from koel.constants import MAX_PHONEMES
from koel.text.frontend import FrontEnd
from koel.text.g2p.base import FrontEndUnavailable
from koel.text.languages import LANGUAGES, TextInputError

_LANG_HELP = "language code or name: " + ", ".join(f"{c}={i.name}" for c, i in LANGUAGES.items())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="text to phonemize ('-' or none with --file/stdin)")
    p.add_argument("-l", "--lang", default="a", help=_LANG_HELP + " (default: a)")
    p.add_argument("-f", "--file", type=Path, help="read the text from this file (UTF-8)")
    p.add_argument(
        "--lexicon", type=Path, help="user lexicon: JSON {word: phonemes} or 'word<TAB>phonemes' lines"
    )
    p.add_argument(
        "--raw", action="store_true", help="the input is already phonemes: only filter and chunk it"
    )
    p.add_argument(
        "--no-normalize", action="store_true", help="plain misaki/espeak: no number/date/unit rewriting"
    )
    p.add_argument(
        "--chunks", action="store_true", help="print one chunk per line (with its text) instead of one line"
    )
    p.add_argument(
        "--max-phonemes", type=int, default=MAX_PHONEMES, help=f"chunk size limit (default {MAX_PHONEMES})"
    )


def run(args: argparse.Namespace) -> int:
    """Handler for the parsed ``phonemize`` arguments; returns the exit status."""
    try:
        if args.file is not None:
            text = args.file.read_text(encoding="utf-8")
        elif args.text is None or args.text == "-":
            text = sys.stdin.read()
        else:
            text = args.text
        fe = FrontEnd(args.lang, lexicon=args.lexicon, normalize=not args.no_normalize)
        chunks = fe.chunks(text, raw_phonemes=args.raw, max_phonemes=args.max_phonemes)
        if args.chunks:
            for c in chunks:
                flags = ("S" if c.sentence_end else "-") + ("P" if c.paragraph_end else "-")
                print(f"{c.index}\t{len(c.phonemes)}\t{flags}\t{c.phonemes}\t{c.text}")
        else:
            print(" ".join(c.phonemes for c in chunks))
    except (TextInputError, FrontEndUnavailable, OSError, UnicodeDecodeError) as e:
        print(f"koel phonemize: error: {e}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``phonemize`` subcommand to an argparse subparsers object (``args.func(args) -> int``)."""
    p = subparsers.add_parser(
        "phonemize",
        help="print the phonemes of a text",
        description="Print the phonemes koel's front end makes from a text (normalised, G2P, chunked).",
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def main_phonemize(argv: list[str] | None = None) -> int:
    """``koel phonemize TEXT [--lang L] [--file F] [--lexicon F] [--raw]`` as a standalone command."""
    p = argparse.ArgumentParser(prog="koel phonemize", description="Print the phonemes of a text.")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main_phonemize())
