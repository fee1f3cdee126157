"""Word error rate of speech made with koel's front end vs plain misaki, on number-dense sentences.

Each sentence of ``sentences_numbers.txt`` is synthesised twice with the same model and voice:
once with ``FrontEnd('a', normalize=False)`` (what plain misaki does) and once with koel's
normalising front end. Whisper base transcribes both; WER is computed after Whisper's English
text normalisation (so "$5.50" and "five dollars and fifty cents" count as the same words).

    KOEL_VOICES_DIR=../shared/voices python bench/frontend_wer.py [--limit N] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from whisper_util import english_normalizer, load_whisper, normalized_wer, transcribe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=Path, default=HERE / "sentences_numbers.txt")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--limit", type=int, default=0, help="only the first N sentences")
    p.add_argument("--out", type=Path, help="write per-sentence results as JSON")
    p.add_argument("--device", default=None, help="model device for koel (default: auto)")
    args = p.parse_args(argv)

    os.environ.setdefault("KOEL_VOICES_DIR", str(HERE.parent.parent / "shared" / "voices"))
    from koel.pipeline import Pipeline
    from koel.text import FrontEnd

    sentences = [s.strip() for s in args.sentences.read_text(encoding="utf-8").splitlines() if s.strip()]
    if args.limit:
        sentences = sentences[: args.limit]
    whisper = load_whisper()
    norm = english_normalizer()
    results: dict[str, list[dict]] = {}
    engine = None
    for name, normalize in (("misaki", False), ("koel", True)):
        fe = FrontEnd("a", normalize=normalize)
        pipe = Pipeline(engine, voice=args.voice, frontend=fe, device=args.device)
        engine = pipe.engine  # the same model (and voice) for both front ends
        rows = []
        t0 = time.perf_counter()
        for s in sentences:
            audio = pipe.synthesize(s).audio
            hyp = transcribe(whisper, audio).text
            rows.append(
                {
                    "text": s,
                    "phonemes": fe.phonemize(s),
                    "heard": hyp,
                    "ref_norm": norm(s),
                    "hyp_norm": norm(hyp),
                    "wer": normalized_wer([s], [hyp], norm),
                }
            )
        results[name] = rows
        print(f"{name}: {len(rows)} sentences in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    wers = {
        name: normalized_wer([r["text"] for r in rows], [r["heard"] for r in rows], norm)
        for name, rows in results.items()
    }
    print(
        f"sentences: {len(sentences)}   voice: {args.voice}   ASR: Whisper base (faster-whisper, int8, greedy)"
    )
    print(f"WER plain misaki front end : {wers['misaki']:.1%}")
    print(f"WER koel front end         : {wers['koel']:.1%}")
    worst = sorted(
        zip(results["misaki"], results["koel"], strict=True), key=lambda p: p[1]["wer"] - p[0]["wer"]
    )
    print("\nlargest gains (misaki -> koel):")
    for m, k in worst[:8]:
        print(
            f"  {m['wer']:.0%} -> {k['wer']:.0%}  {m['text']}\n      misaki heard: {m['heard']}\n      koel heard:   {k['heard']}"
        )
    if args.out:
        args.out.write_text(json.dumps({"wer": wers, "results": results}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
