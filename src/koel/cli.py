"""The ``koel`` command line: a thin shell over the library (say, voices, phonemize, ...)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from koel.constants import SAMPLE_RATE


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _read_text(args: argparse.Namespace) -> str:
    if args.text and args.file:
        raise CLIError("give the text either as an argument or with --file, not both")
    if args.file:
        path = Path(args.file)
        try:
            raw = sys.stdin.read() if args.file == "-" else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read {args.file}: {exc}") from exc
        if path.suffix.lower() in (".md", ".markdown"):
            from koel.markdown import markdown_to_text

            raw = markdown_to_text(raw)
        return raw
    if args.text:
        return " ".join(args.text)
    if sys.stdin.isatty():
        raise CLIError("no text: pass it as an argument, with --file, or on standard input")
    return sys.stdin.read()


def _make_pipeline(args: argparse.Namespace):
    from koel.pipeline import Pipeline, SynthesisOptions
    from koel.voices import VoiceStore

    options = SynthesisOptions(speed=args.speed)
    store = VoiceStore(args.voices_dir) if args.voices_dir else None
    from koel.backends.auto import default_engine

    engine = default_engine(args.engine, args.device, source=args.model)
    pipe = Pipeline(engine, voice=args.voice, lang=args.lang, voices=store, options=options)
    return pipe


def cmd_say(args: argparse.Namespace) -> int:
    from koel.longform import speak_to_file

    text = _read_text(args)
    if not text.strip():
        raise CLIError("the text is empty: nothing to say")
    if args.stream and args.output not in (None, "-"):
        raise CLIError("--stream writes to standard output; drop -o or use -o -")
    pipe = _make_pipeline(args)
    if args.stream or args.output == "-":
        fmt = args.format or "pcm"
        result = speak_to_file(
            pipe,
            text,
            sys.stdout.buffer,
            fmt=fmt,
            progress=False,
            raw_phonemes=args.phonemes,
            low_latency=True,
        )
    else:
        output = Path(args.output or "koel.wav")
        result = speak_to_file(
            pipe,
            text,
            output,
            fmt=args.format,
            resume=args.resume,
            progress=args.progress,
            raw_phonemes=args.phonemes,
        )
        print(f"wrote {output} ({result.seconds:.2f} s of audio at {SAMPLE_RATE} Hz)", file=sys.stderr)
    from koel.subtitles import to_srt, to_vtt

    level = "word" if args.word_cues else "sentence"
    if args.srt:
        Path(args.srt).write_text(to_srt(result.words, level=level), encoding="utf-8")
    if args.vtt:
        Path(args.vtt).write_text(to_vtt(result.words, level=level), encoding="utf-8")
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    from koel.voices import LANGUAGE_NAMES, VoiceStore, voice_gender, voice_language

    store = VoiceStore(args.voices_dir)
    for name, where in sorted(store.available().items()):
        lang = voice_language(name)
        language = LANGUAGE_NAMES.get(lang or "", "unknown language")
        print(f"{name:16s} {language:22s} {voice_gender(name) or '-':7s} {', '.join(where)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="koel", description="Kokoro-82M text to speech.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    say = sub.add_parser("say", help="speak text into an audio file (or stdout)")
    say.add_argument("text", nargs="*", help="the text (or use --file, or standard input)")
    say.add_argument("-f", "--file", help="read the text from a .txt or .md file ('-' for stdin)")
    say.add_argument("-o", "--output", help="output file; the extension picks the format (default koel.wav)")
    say.add_argument("--format", help="wav, flac, mp3, opus, aac or pcm (overrides the extension)")
    say.add_argument(
        "--voice", help="voice name, file-less blend 'af_heart:0.7+am_michael:0.3' (default af_heart)"
    )
    say.add_argument(
        "--lang", help="language code (a, b, e, f, h, i, j, p, z); default from the voice prefix"
    )
    say.add_argument("--speed", type=float, default=1.0, help="speaking rate (0.25-4, default 1)")
    say.add_argument("--srt", help="also write SRT subtitles here")
    say.add_argument("--vtt", help="also write WebVTT subtitles here")
    say.add_argument("--word-cues", action="store_true", help="one subtitle cue per word")
    say.add_argument(
        "--stream", action="store_true", help="write raw 16-bit 24 kHz PCM to stdout as it is made"
    )
    say.add_argument("--phonemes", action="store_true", help="the input is already phonemes (raw mode)")
    say.add_argument(
        "--resume", action="store_true", help="make the job resumable (restart where a killed run stopped)"
    )
    say.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    _common_model_args(say)
    say.set_defaults(func=cmd_say)

    voices = sub.add_parser("voices", help="list voices with language, gender and where they load from")
    voices.add_argument("--voices-dir", help="folder of voice packs (default KOEL_VOICES_DIR)")
    voices.set_defaults(func=cmd_voices)

    from koel.text.cli import register as register_phonemize

    register_phonemize(sub)
    for extra in ("koel.serve.cli", "koel.export.cli", "koel.train.cli", "koel.clone_cli"):
        _register_optional(sub, extra)
    return parser


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voices-dir", help="folder of voice packs (default KOEL_VOICES_DIR)")
    p.add_argument("--model", help="weights: a koel checkpoint, kokoro-v1_0.pth, or 'hf' (default: embedded)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    add_engine_arg(p)


def add_engine_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--engine``: which inference engine runs the model (default: the fastest available here)."""
    p.add_argument(
        "--engine",
        choices=["auto", "fast", "onnx", "torch"],
        help="fast: accelerated PyTorch; onnx: ONNX Runtime on koel's export; torch: reference PyTorch "
        "(default: $KOEL_ENGINE, else the fastest here)",
    )


def _register_optional(sub, module: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    mod.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    from koel.audio import AudioFormatError
    from koel.model import ModelInputError
    from koel.text import TextInputError
    from koel.voices import VoiceError
    from koel.weights.errors import WeightsError

    try:
        return int(args.func(args) or 0)
    except (
        CLIError,
        VoiceError,
        TextInputError,
        AudioFormatError,
        WeightsError,
        ModelInputError,
        ValueError,
    ) as exc:
        print(f"koel: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("koel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
