"""``koel export``: write koel's model as ONNX (durations as an output) and print a parity check."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PARITY_TEXT = (
    "ðə kwˈɪk bɹˈaʊn fˈɑks ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɔɡ.",
    "wˌʌn, tˈu, θɹˈi! ʃˌæl wi bəɡˈɪn?",
    "kˈOkəɹO ɪz ɐn ˈOpən wˈAt tˌitˌiˈɛs mˈɑdᵊl wɪð ˈATi tˈu mˈɪljən pˈæɹəmətəɹz.",
)
"""Phoneme strings of three lengths for the parity check (no front end needed)."""


def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort

    from koel.export.onnx_export import check_parity, export_onnx, format_parity
    from koel.tokenizer import encode, with_boundaries
    from koel.voices import VoiceError, VoiceStore
    from koel.weights.loading import load_model

    model = load_model(args.model)
    output = Path(args.output or f"koel-{args.precision}.onnx")
    start = time.perf_counter()
    export_onnx(model, output, precision=args.precision, opset=args.opset)
    print(
        f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {args.precision}) in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    if args.no_check:
        return 0
    store = VoiceStore(args.voices_dir) if args.voices_dir else VoiceStore()
    try:
        voice = store.get(args.voice) if args.voice else None
    except VoiceError as exc:
        print(
            f"koel: voice {args.voice} not available ({exc}); checking with a random style", file=sys.stderr
        )
        voice, args.voice = None, None
    rng = np.random.default_rng(0)
    inputs = []
    for phonemes in PARITY_TEXT:
        style = (
            voice.row(len(phonemes)).reshape(-1).numpy()
            if voice
            else rng.normal(0, 0.1, 256).astype(np.float32)
        )
        inputs.append((with_boundaries(encode(phonemes)), style))
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    rows = check_parity(model, session, inputs)
    print(f"parity against the PyTorch model ({args.voice or 'random style'}):")
    print(format_parity(rows))
    worst = max(r.spectral_error for r in rows)
    bound = 0.1 if args.precision == "fp32" else 0.3
    same = all(r.durations_equal for r in rows)
    print(f"durations {'identical' if same else 'differ'}; worst spectral error {worst:.4f} (bound {bound})")
    return 0 if worst <= bound and (same or args.precision != "fp32") else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export the model to ONNX (with durations) and check it against PyTorch"
    )
    p.add_argument("-o", "--output", help="output .onnx file (default koel-PRECISION.onnx)")
    p.add_argument(
        "--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="weights (default fp32)"
    )
    p.add_argument("--model", help="weights: a koel checkpoint, kokoro-v1_0.pth, or 'hf' (default: embedded)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--voice", default="af_heart", help="voice for the parity check (default af_heart)")
    p.add_argument("--voices-dir", help="folder of voice packs (default KOEL_VOICES_DIR)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.set_defaults(func=cmd_export)


__all__ = ["register"]
