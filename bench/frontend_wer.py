"""Word error rate of speech made with koel's front end vs plain misaki, on number-dense sentences.

Each sentence of ``sentences_numbers.txt`` is synthesised twice with the same model and voice:
once with ``FrontEnd('a', normalize=False)`` (what plain misaki does) and once with koel's
normalising front end. Whisper base transcribes both; WER is computed after Whisper's English
text normalisation (which turns number words into digits, so "five dollars and fifty cents" and
"$5.50" count as the same words).

The primary reference is ``sentences_numbers_spoken.txt``: each sentence as a careful human reader
would say it, written by hand. Against the written sentence itself the score also counts correct
readings as errors wherever Whisper writes them out ("65 miles per hour" for "65 mph", "March 15th,
2024" for "2024-03-15"), so that number is reported too, but only as a secondary one. The third
line is multi-reference scoring: each transcript is scored against whichever of the two forms it
matches better, so neither front end is penalised for the way Whisper chose to write a correct
reading.

    KOEL_VOICES_DIR=../shared/voices python bench/frontend_wer.py [--limit N] [--out results.json]
    python bench/frontend_wer.py --rescore results.json     # score saved transcripts again
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

from whisper_util import (  # noqa: E402
    english_normalizer,
    load_whisper,
    multi_reference_wer,
    normalized_wer,
    transcribe,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=Path, default=HERE / "sentences_numbers.txt")
    p.add_argument("--spoken", type=Path, default=HERE / "sentences_numbers_spoken.txt")
    p.add_argument("--rescore", type=Path, help="score the transcripts saved by an earlier --out run")
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--limit", type=int, default=0, help="only the first N sentences")
    p.add_argument("--out", type=Path, help="write per-sentence results as JSON")
    p.add_argument("--device", default=None, help="model device for koel (default: auto)")
    args = p.parse_args(argv)

    sentences = [s.strip() for s in args.sentences.read_text(encoding="utf-8").splitlines() if s.strip()]
    spoken = [s.strip() for s in args.spoken.read_text(encoding="utf-8").splitlines() if s.strip()]
    if len(spoken) != len(sentences):
        raise SystemExit(f"{args.spoken} has {len(spoken)} lines for {len(sentences)} sentences")
    if args.limit:
        sentences, spoken = sentences[: args.limit], spoken[: args.limit]
    norm = english_normalizer()
    if args.rescore:
        results = json.loads(args.rescore.read_text(encoding="utf-8"))["results"]
    else:
        results = synthesize_and_transcribe(sentences, args.voice, args.device)
    for rows in results.values():
        for row, said in zip(rows, spoken, strict=True):
            row["spoken"] = said
            row["wer"] = normalized_wer([said], [row["heard"]], norm)
    report(results, norm, args.voice)
    if args.out:
        args.out.write_text(json.dumps({"results": results}, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def synthesize_and_transcribe(sentences: list[str], voice: str, device: str | None) -> dict[str, list[dict]]:
    """Speak every sentence with each front end (same model and voice) and transcribe it."""
    os.environ.setdefault("KOEL_VOICES_DIR", str(HERE.parent.parent / "shared" / "voices"))
    from koel.pipeline import Pipeline
    from koel.text import FrontEnd

    whisper = load_whisper()
    results: dict[str, list[dict]] = {}
    engine = None
    for name, normalize in (("misaki", False), ("koel", True)):
        fe = FrontEnd("a", normalize=normalize)
        pipe = Pipeline(engine, voice=voice, frontend=fe, device=device)
        engine = pipe.engine  # the same model (and voice) for both front ends
        rows = []
        t0 = time.perf_counter()
        for s in sentences:
            audio = pipe.synthesize(s).audio
            rows.append({"text": s, "phonemes": fe.phonemize(s), "heard": transcribe(whisper, audio).text})
        results[name] = rows
        print(f"{name}: {len(rows)} sentences in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return results


def report(results: dict[str, list[dict]], norm, voice: str) -> None:
    def wer(rows: list[dict], key: str) -> float:
        return normalized_wer([r[key] for r in rows], [r["heard"] for r in rows], norm)

    n = len(results["koel"])
    print(f"sentences: {n}   voice: {voice}   ASR: Whisper base (faster-whisper, int8, greedy)")
    print("WER after Whisper's EnglishTextNormalizer      plain misaki   koel")
    print(
        f"  vs the spoken-form reference (primary)       {wer(results['misaki'], 'spoken'):11.1%}  {wer(results['koel'], 'spoken'):6.1%}"
    )
    print(
        f"  vs the written sentence (secondary)          {wer(results['misaki'], 'text'):11.1%}  {wer(results['koel'], 'text'):6.1%}"
    )

    def either(rows: list[dict]) -> float:
        return multi_reference_wer([[r["spoken"], r["text"]] for r in rows], [r["heard"] for r in rows], norm)

    print(
        f"  vs either form, per sentence (multi-ref)     {either(results['misaki']):11.1%}  {either(results['koel']):6.1%}"
    )
    pairs = sorted(
        zip(results["misaki"], results["koel"], strict=True), key=lambda p: p[1]["wer"] - p[0]["wer"]
    )
    print("\nlargest differences (misaki -> koel, vs spoken form):")
    for m, k in [*pairs[:6], *pairs[-4:]]:
        print(f"  {m['wer']:4.0%} -> {k['wer']:4.0%}  {m['text']}")
        print(f"        misaki heard: {m['heard']}\n        koel heard:   {k['heard']}")


if __name__ == "__main__":
    raise SystemExit(main())
