"""Long inputs: time to first audio for a 1,000-word text, and flat memory on a 20,000-word book.

    python bench/longform.py ttfa [--words 1000]
    python bench/longform.py memory [--words 20000] [--engine torch|fake]

Each measurement runs in its own subprocess (peak RSS = ru_maxrss of that process). The memory
check compares the peak of one sentence with the peak of the whole book written to a WAV file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED_VOICES = Path(__file__).resolve().parents[2] / "shared" / "voices"

CORPUS = [
    "The old lighthouse keeper climbed the spiral stairs every evening at {h}:{m:02d} pm.",
    "He counted {n} steps, then lit the lamp that warned the ships.",
    "In {y} the harbour held {n} fishing boats; today only {k} remain.",
    "Storms arrived from the west, bringing rain, wind, and the smell of salt.",
    "Dr. Alvarez, who studied the birds on the cliffs, wrote about them for {k} years.",
    "Her notes filled {n} notebooks, each one labelled with a date and a short title.",
    "When the keeper retired, the village held a party that lasted until midnight.",
    "Children ran along the pier, and the music carried far across the water.",
    "Nobody knew why the bell rang twice on the night of the {k}th of March.",
    "Fog rolled in.",
    "The mayor promised a new road, a school, and {n} street lamps before the winter of {y}.",
    "Some said the keeper talked to the gulls; others said the gulls talked to him.",
]


def make_text(words: int, seed: int = 0) -> str:
    """About ``words`` words of varied prose: sentences in random order with random numbers, and
    paragraphs of 1-9 sentences, so chunk lengths (and the shapes the engine sees) keep changing."""
    rng = random.Random(seed)
    out: list[str] = []
    n, left = 0, rng.randint(1, 9)
    while n < words:
        sentence = rng.choice(CORPUS).format(
            h=rng.randint(1, 12),
            m=rng.randint(0, 59),
            n=rng.randint(2, 999),
            k=rng.randint(2, 30),
            y=rng.randint(1850, 2020),
        )
        out.append(sentence)
        n += len(sentence.split())
        left -= 1
        if left == 0:
            out.append("\n\n")
            left = rng.randint(1, 9)
    return " ".join(out)


CHILD = r"""
import json, resource, sys, time
from koel.pipeline import Pipeline
mode, words, engine_name, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, sys.argv[5])
from longform import make_text
if engine_name == "fake":
    from koel.backends.fake import FakeEngine
    engine = FakeEngine()
else:
    from koel.backends.auto import default_engine
    engine = default_engine(None if engine_name == "auto" else engine_name)
pipe = Pipeline(engine, voice="af_heart")
text = make_text(words) if words else "A single short sentence for the baseline."
if mode == "ttfa":
    pipe.synthesize("Warm up.")
    t = time.perf_counter()
    first = next(iter(pipe.stream(text)))
    ttfa = time.perf_counter() - t
    t = time.perf_counter()
    pieces = pipe.pieces(text)
    piece = next(pieces)
    ttfa_pieces = time.perf_counter() - t
    print(json.dumps({"ttfa": ttfa, "first_chunk_words": len(first.text.split()),
                      "first_chunk_seconds": len(first.audio) / 24000, "ttfa_pieces": ttfa_pieces,
                      "first_piece_seconds": len(piece.audio) / 24000}))
else:
    from koel.longform import speak_to_file
    t = time.perf_counter()
    result = speak_to_file(pipe, text, target, progress=False, keep_words=False)
    print(json.dumps({"seconds_audio": result.seconds, "wall": time.perf_counter() - t, "chunks": result.chunks,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, words: int, engine: str) -> dict:
    env = dict(os.environ)
    if SHARED_VOICES.is_dir():
        env.setdefault("KOEL_VOICES_DIR", str(SHARED_VOICES))
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                mode,
                str(words),
                engine,
                str(Path(tmp) / "out.wav"),
                str(Path(__file__).parent),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["ttfa", "memory"])
    parser.add_argument("--words", type=int, default=None)
    parser.add_argument("--engine", default="auto", choices=["auto", "fast", "torch", "onnx", "fake"])
    args = parser.parse_args()
    if args.what == "ttfa":
        words = args.words or 1000
        r = child("ttfa", words, args.engine)
        print(
            f"time to first audio, {words}-word input ({args.engine}): Pipeline.stream {r['ttfa']:.3f} s "
            f"(first chunk: {r['first_chunk_words']} words, {r['first_chunk_seconds']:.2f} s of audio); "
            f"Pipeline.pieces (koel say --stream) {r['ttfa_pieces']:.3f} s "
            f"(first piece {r['first_piece_seconds']:.2f} s of audio)"
        )
    else:
        words = args.words or 20000
        base = child("memory", 0, args.engine)
        book = child("memory", words, args.engine)
        print(f"{'input':22s} {'audio s':>9s} {'wall s':>8s} {'chunks':>7s} {'peak RSS MB':>12s}")
        print(
            f"{'one sentence':22s} {base['seconds_audio']:9.1f} {base['wall']:8.1f} {base['chunks']:7d} {base['peak_mb']:12.0f}"
        )
        print(
            f"{f'{words} words':22s} {book['seconds_audio']:9.1f} {book['wall']:8.1f} {book['chunks']:7d} {book['peak_mb']:12.0f}"
        )
        growth = book["peak_mb"] - base["peak_mb"]
        print(f"peak growth: {growth:.0f} MB (limit 300 MB): {'PASS' if growth <= 300 else 'FAIL'}")


if __name__ == "__main__":
    main()
