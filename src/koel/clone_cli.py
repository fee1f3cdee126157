"""``koel voice create|blend|interpolate|edit|measure``: make new voice packs from the command line.

A thin shell over :mod:`koel.clone`. Voices are written as ``NAME.pt`` into the voices folder
(``KOEL_VOICES_DIR``) unless ``-o`` names a file, so ``koel say --voice NAME`` works right after.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from koel.voices import OFFICIAL_VOICES, Voice, VoiceError, save_voice

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Voice names the store can load back (``koel say --voice NAME``)."""


class VoiceCommandError(VoiceError):
    """A user error in a ``koel voice`` command (printed as one line by the main CLI)."""


def _target_path(args: argparse.Namespace) -> Path:
    """Where the new voice goes; every check runs before any work, so a refusal costs nothing."""
    from koel.paths import voices_dir

    if not _NAME.match(args.name) or ".." in args.name:
        raise VoiceCommandError(
            f"--name {args.name!r}: use letters, digits, '_', '-' or '.' (at most 64), no folders"
        )
    if args.output:
        path = Path(args.output)
        if path.suffix != ".pt":
            raise VoiceCommandError(f"-o {path}: voice files end in .pt")
    else:
        if args.name in OFFICIAL_VOICES:
            raise VoiceCommandError(f"{args.name!r} is an official voice name; pick another --name")
        folder = Path(args.voices_dir) if args.voices_dir else voices_dir()
        if folder is None:
            raise VoiceCommandError(
                "no voices folder: set KOEL_VOICES_DIR (or --voices-dir), or write with -o PATH"
            )
        path = folder / f"{args.name}.pt"
    if path.exists() and not args.force:
        raise VoiceCommandError(f"{path} exists; use --force to replace it")
    return path


def _store(args: argparse.Namespace):
    from koel.voices import VoiceStore

    return VoiceStore(args.voices_dir) if args.voices_dir else VoiceStore()


def _model(args: argparse.Namespace):
    import torch

    from koel.weights.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(args.model)  # None: the embedded default


def _write(voice: Voice, args: argparse.Namespace, path: Path) -> None:
    save_voice(voice.pack, path)
    hint = f"--voice {path.stem}" if not args.output else f"--voices-dir {path.parent} --voice {path.stem}"
    print(f"wrote {path}; use it with: koel say {hint} ...", file=sys.stderr)


class _Progress:
    """One status line on stderr, rewritten in place on a terminal, every 10th step otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()

    def __call__(self, stage: str, i: int, n: int, terms: dict[str, float]) -> None:
        if self.quiet:
            return
        shown = " ".join(
            f"{k} {v:.3f}" for k, v in terms.items() if k in ("loss", "speaker", "pitch", "rate")
        )
        line = f"{stage} {i}/{n} [{time.perf_counter() - self.start:.0f} s] {shown}"
        if self.tty:
            print(f"\r\033[K{line}", end="" if i < n else "\n", file=sys.stderr, flush=True)
        elif i == n or i % 10 == 0:
            print(line, file=sys.stderr, flush=True)


def cmd_create(args: argparse.Namespace) -> int:
    from koel.clone import CloneOptions, create_voice, load_reference
    from koel.clone.audio_input import check_total_speech

    path = _target_path(args)
    texts: list[str | None] | None = None
    if args.text_file:
        try:
            texts = [Path(f).read_text(encoding="utf-8").strip() for f in args.text_file]
        except (OSError, UnicodeDecodeError) as exc:
            raise VoiceCommandError(f"cannot read the transcript file: {exc}") from exc
    elif args.text:
        texts = list(args.text)
    if texts is not None and len(texts) != len(args.references):
        raise VoiceCommandError(
            f"{len(texts)} transcripts for {len(args.references)} recordings: give one per recording"
        )
    transcribe = {"auto": None, "yes": True, "no": False}[args.transcribe]
    options = CloneOptions(steps=args.steps, lang=args.lang, transcribe=transcribe, seed=args.seed)
    clips = [load_reference(p) for p in args.references]  # bad input fails before the model loads
    check_total_speech(clips)  # raises when too short; create_voice reports the warnings
    result = create_voice(
        clips,
        name=args.name,
        transcripts=texts,
        model=_model(args),
        store=_store(args),
        options=options,
        progress=_Progress(args.quiet),
    )
    best, best_sim = result.best_official
    print(
        f"created {args.name} in {result.seconds:.0f} s: speaker similarity {result.similarity:.3f} "
        f"(closest official voice {best} {best_sim:.3f}); blend {result.blend}; transcript: {result.transcript_source}",
        file=sys.stderr,
    )
    _write(result.voice, args, path)
    return 0


def cmd_blend(args: argparse.Namespace) -> int:
    from koel.clone import blend_voices
    from koel.voices import parse_blend

    path = _target_path(args)
    store = _store(args)
    voice = blend_voices([(store.find(n), w) for n, w in parse_blend(args.spec)], name=args.name)
    _write(voice, args, path)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from koel.clone import interpolate

    path = _target_path(args)
    store = _store(args)
    _write(interpolate(store.get(args.a), store.get(args.b), args.t, name=args.name), args, path)
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from koel.clone import edit_directions, edit_voice, official_bank

    if args.pitch == 0 and args.rate == 1 and args.spread == 1:
        raise VoiceCommandError("nothing to change: give --pitch, --rate or --spread")
    path = _target_path(args)
    store = _store(args)
    model = _model(args)
    bank = official_bank(store)
    if not args.quiet:
        print(
            f"edit directions from {len(bank)} official voices (measured once, then cached)",
            file=sys.stderr,
            flush=True,
        )
    directions = edit_directions(model, bank)
    voice, before, after = edit_voice(
        model,
        store.get(args.voice),
        directions,
        pitch=args.pitch,
        rate=args.rate,
        spread=args.spread,
        name=args.name,
    )
    print(f"before: {before}\nafter:  {after}", file=sys.stderr)
    _write(voice, args, path)
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from koel.clone import measure_voice

    store = _store(args)
    model = _model(args)
    for spec in args.voices:
        print(f"{spec:24s} {measure_voice(model, store.get(spec).pack)}")
    return 0


def _common(p: argparse.ArgumentParser, output: bool = True) -> None:
    p.add_argument("--voices-dir", help="folder of voice packs (default KOEL_VOICES_DIR)")
    if output:
        p.add_argument(
            "--name", required=True, help="name of the new voice (file NAME.pt in the voices folder)"
        )
        p.add_argument("-o", "--output", help="write the .pt file here instead of the voices folder")
        p.add_argument("--force", action="store_true", help="replace an existing voice file")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="weights (default: embedded)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (1 is fastest on a busy machine)")


def register(subparsers) -> None:
    """Add ``koel voice ...`` to the main parser's subcommands."""
    voice = subparsers.add_parser(
        "voice", help="create voices from recordings, blend, interpolate and edit them"
    )
    sub = voice.add_subparsers(dest="voice_command", required=True)

    create = sub.add_parser("create", help="fit a new voice to reference recordings of one speaker")
    create.add_argument(
        "references", nargs="+", help="recordings (wav, flac, mp3, ...): 10 s to a few minutes"
    )
    create.add_argument(
        "--text", action="append", help="transcript of a recording (repeat once per recording)"
    )
    create.add_argument("--text-file", action="append", help="file with the transcript (once per recording)")
    create.add_argument(
        "--transcribe",
        choices=("auto", "yes", "no"),
        default="auto",
        help="without --text: 'auto' transcribes with Whisper base when faster-whisper is installed, "
        "'yes' requires it, 'no' never does. A transcript lets the new voice speak the same words as "
        "the recording (like-for-like comparison) and gives the speaking-rate target; without one, "
        "generic sentences are spoken and the rate is not matched (identity, timbre and pitch still are)",
    )
    create.add_argument(
        "--lang", default="a", help="language code of the speech (default a, American English)"
    )
    create.add_argument("--steps", type=int, default=60, help="optimisation steps (default 60)")
    create.add_argument("--seed", type=int, default=0, help="random seed (crops and text order)")
    create.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    _common(create)
    _model_args(create)
    create.set_defaults(func=cmd_create)

    bl = sub.add_parser("blend", help="weighted mix of voices, e.g. 'af_heart:0.7+bf_emma:0.3'")
    bl.add_argument("spec", help="voices with weights: a:0.7+b:0.3 (or a,b for equal parts)")
    _common(bl)
    bl.set_defaults(func=cmd_blend)

    ip = sub.add_parser("interpolate", help="a point on the line between two voices")
    ip.add_argument("a")
    ip.add_argument("b")
    ip.add_argument("--t", type=float, default=0.5, help="0 = A, 1 = B (default 0.5)")
    _common(ip)
    ip.set_defaults(func=cmd_interpolate)

    ed = sub.add_parser("edit", help="change pitch, speaking rate or pitch spread along measured directions")
    ed.add_argument("voice", help="voice name or blend spec")
    ed.add_argument("--pitch", type=float, default=0.0, help="semitones up (+) or down (-)")
    ed.add_argument("--rate", type=float, default=1.0, help="speaking-rate factor (1.1 = 10%% faster)")
    ed.add_argument("--spread", type=float, default=1.0, help="pitch-variation factor (1.3 = livelier)")
    ed.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    _common(ed)
    _model_args(ed)
    ed.set_defaults(func=cmd_edit)

    me = sub.add_parser("measure", help="pitch, pitch spread and speaking rate of voices")
    me.add_argument("voices", nargs="+")
    _common(me, output=False)
    _model_args(me)
    me.set_defaults(func=cmd_measure)
