"""GPU throughput, time to first audio and memory of koel's model, self-contained (no front end, no network).

On the GPU machine (needs only torch, numpy, safetensors and the repo's src/ on PYTHONPATH):

    PYTHONPATH=src python bench/gpu_speed.py --inputs gpu_inputs.json --voice af_heart.pt [--weights W]

Without ``--weights`` the full-size model has random weights: the arithmetic, shapes and lengths are
those of Kokoro-82M because every utterance is forced to the real durations stored in the inputs file
(the real model's predictions), so audio lengths and timings are realistic even though the sound is not.

Measures, for each variant (``fp32``; ``bf16``: the same model under bf16 autocast; ``fast``:
:func:`koel.model.fast.accelerate`, which uses bf16 convolutions where the GPU supports them):

* throughput for padded batches of 1, 4, 16 and 64 sentences (sorted by length, so each batch holds
  similar lengths): sentences per second and seconds of audio per second;
* time to first audio for the ~200-word paragraph: its first chunk (at the pipeline's chunk limit
  and with a short first chunk), batch 1, device synchronised and audio copied to the host;
* peak GPU memory of each measurement.

Making the inputs (here, on a CPU with the real model, the front end and ../shared/voices):

    python bench/gpu_speed.py --make-inputs bench/gpu_inputs.json [--sentences 100]

Testing the script itself on a CPU: ``python bench/gpu_speed.py --inputs FILE --voice PACK --device cpu --quick``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
SR = 24_000
FRAME = 600  # samples per duration frame
FORMAT = "koel-gpu-inputs-v1"
FIRST_CHUNK_LIMITS = (510, 100, 25)  # phonemes: the pipeline's limit, the server's first chunk, a short one


# -- inputs (made on the CPU machine) ---------------------------------------------------------------


def make_inputs(path: Path, n_sentences: int, voice: str) -> None:
    """Write token ids and the real model's durations for ``n_sentences`` sentences and the paragraph."""
    sys.path.insert(0, str(BENCH))
    from koel.text import FrontEnd
    from koel.tokenizer import VOCAB, with_boundaries
    from koel.voices import VoiceStore
    from koel.weights.loading import load_model
    from speed import PARAGRAPH, _sentences  # type: ignore[import-not-found]

    front, pack, model = FrontEnd("a"), VoiceStore().get(voice), load_model()

    def item(text: str, phonemes: str) -> dict:
        ids = with_boundaries(VOCAB[c] for c in phonemes if c in VOCAB)
        row = pack.row(len(phonemes))
        with torch.no_grad():
            ids_t = torch.tensor([ids])
            _, logits = model.prosody_features(ids_t, None, row[:, model.config.style_dim :])
            durations = model.durations_from_logits(logits, torch.ones(1))[0]
        return {
            "text": text,
            "ids": list(ids),
            "style_index": min(max(len(phonemes), 1), pack.pack.shape[0]) - 1,
            "durations": durations.tolist(),
        }

    sentences = []
    for text in _sentences(n_sentences):
        chunk = next(iter(front.chunks(text)))
        sentences.append(item(text, chunk.phonemes))
    paragraph = {
        "text": PARAGRAPH,
        "words": len(PARAGRAPH.split()),
        "chunks": [item(c.text, c.phonemes) for c in front.chunks(PARAGRAPH)],
        "first_chunk": {
            str(limit): item(c.text, c.phonemes)
            for limit in FIRST_CHUNK_LIMITS
            for c in [next(iter(front.chunks(PARAGRAPH, max_phonemes=limit)))]
        },
    }
    data = {"format": FORMAT, "voice": voice, "sentences": sentences, "paragraph": paragraph}
    path.write_text(json.dumps(data))
    audio = sum(sum(s["durations"]) for s in sentences) * FRAME / SR
    print(f"wrote {path}: {len(sentences)} sentences ({audio:.0f} s of audio) and the paragraph")


def read_inputs(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read the inputs file {path}: {exc}") from exc
    if data.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a gpu_speed inputs file (make one with --make-inputs)")
    return data


# -- model and batches ------------------------------------------------------------------------------


def build_model(weights: str | None, device: torch.device) -> torch.nn.Module:
    from koel.config import ModelConfig
    from koel.model import KokoroModel

    if weights:
        from koel.weights.loading import load_model

        return load_model(weights, device=device)
    torch.manual_seed(0)
    model = KokoroModel(ModelConfig()).eval()
    model.fold_weight_norm()
    return model.to(device)


def read_voice(path: str | None) -> torch.Tensor:
    """The voice pack as [510, 256]; random rows (scale 0.1) without a path."""
    if path is None:
        return torch.randn(510, 256, generator=torch.Generator().manual_seed(0)) * 0.1
    pack = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(pack, torch.Tensor) or pack.numel() % 256:
        raise SystemExit(f"{path} is not a voice pack (a tensor of 256-wide rows)")
    return pack.reshape(-1, 256).float()


def padded(
    items: list[dict], pack: torch.Tensor, device: torch.device
):  # -> (ids, style, lengths, durations)
    width = max(len(it["ids"]) for it in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    durations = torch.zeros(len(items), width, dtype=torch.long)
    for b, it in enumerate(items):
        ids[b, : len(it["ids"])] = torch.tensor(it["ids"])
        durations[b, : len(it["durations"])] = torch.tensor(it["durations"])
    lengths = torch.tensor([len(it["ids"]) for it in items])
    style = torch.stack([pack[min(it["style_index"], len(pack) - 1)] for it in items])
    return ids.to(device), style.to(device), lengths.to(device), durations.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthesize(model, batch, device: torch.device, autocast: bool) -> list[np.ndarray]:
    """One padded batch to host audio (the copy to the host is part of the work)."""
    ids, style, lengths, durations = batch
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
        out = model.synthesize(ids, style, lengths=lengths if len(ids) > 1 else None, durations=durations)
        audio = out.audio.float().cpu().numpy()
    return [audio[b, : int(n)] for b, n in enumerate(out.audio_lengths.tolist())]


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan


# -- measurements -----------------------------------------------------------------------------------


def throughput(model, items, pack, device, batch_size: int, autocast: bool) -> tuple[float, float, float]:
    """(sentences/s, audio s per s, peak MB) for all ``items`` in padded batches of ``batch_size``."""
    order = sorted(items, key=lambda it: len(it["ids"]))
    batches = [padded(order[i : i + batch_size], pack, device) for i in range(0, len(order), batch_size)]
    synthesize(model, batches[-1], device, autocast)  # warm-up at the longest shape
    sync(device)
    reset_memory(device)
    t0 = time.perf_counter()
    seconds = 0.0
    for batch in batches:
        seconds += sum(len(a) for a in synthesize(model, batch, device, autocast)) / SR
    sync(device)
    wall = time.perf_counter() - t0
    return len(items) / wall, seconds / wall, peak_memory_mb(device)


def first_audio(model, item, pack, device, autocast: bool, repeats: int) -> tuple[float, float, float]:
    """(median seconds to the first chunk's audio on the host, its audio seconds, peak MB)."""
    batch = padded([item], pack, device)
    synthesize(model, batch, device, autocast)
    reset_memory(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        audio = synthesize(model, padded([item], pack, device), device, autocast)[0]
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(audio) / SR, peak_memory_mb(device)


def variants(base, names: list[str], device: torch.device):  # -> iterator of (name, model, autocast)
    import copy

    for name in names:
        if name == "fp32":
            yield name, base, False
        elif name == "bf16":
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                print("bf16: not supported on this GPU, skipped")
                continue
            yield name, base, True
        elif name == "fast":
            from koel.model.fast import accelerate

            model = copy.deepcopy(base)
            dtype = accelerate(model, "auto")
            print(f"fast: koel.model.fast.accelerate with {str(dtype)[6:]} convolutions")
            yield name, model, False
            del model
        else:
            raise SystemExit(f"unknown variant {name!r}: choose from fp32, bf16, fast")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--make-inputs", metavar="FILE", help="write the inputs file (CPU, real model) and exit"
    )
    parser.add_argument("--sentences", type=int, default=100, help="sentences in --make-inputs (default 100)")
    parser.add_argument("--inputs", default=str(BENCH / "gpu_inputs.json"), help="inputs file (JSON)")
    parser.add_argument("--voice", help="voice pack .pt ([510, 1, 256]); default: random style rows")
    parser.add_argument("--voice-name", default="af_heart", help="voice for --make-inputs (default af_heart)")
    parser.add_argument("--weights", help="real weights (koel checkpoint or kokoro-v1_0.pth); default random")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, mps or cpu (default cuda)")
    parser.add_argument("--batches", default="1,4,16,64", help="batch sizes (default 1,4,16,64)")
    parser.add_argument("--variants", default="fp32,bf16,fast", help="fp32, bf16 (autocast), fast")
    parser.add_argument("--repeats", type=int, default=5, help="time-to-first-audio repeats (median)")
    parser.add_argument("--budget-s", type=float, default=200.0, help="skip remaining cells after this")
    parser.add_argument(
        "--quick", action="store_true", help="4 sentences, batches 1 and 4, 2 repeats, short first chunk only"
    )
    args = parser.parse_args()
    if args.make_inputs:
        make_inputs(Path(args.make_inputs), args.sentences, args.voice_name)
        return
    start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu (with --quick) to test the script")
    data = read_inputs(Path(args.inputs))
    items = data["sentences"]
    batch_sizes = [int(b) for b in args.batches.split(",")]
    repeats = args.repeats
    if args.quick:
        items, batch_sizes, repeats = sorted(items, key=lambda it: len(it["ids"]))[:4], [1, 4], 2
        args.budget_s = math.inf
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # random weights can produce denormals, which are slow on CPUs
    pack = read_voice(args.voice)
    model = build_model(args.weights, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    audio = sum(sum(it["durations"]) for it in items) * FRAME / SR
    print(
        f"koel GPU bench: {name}, torch {torch.__version__}, weights {args.weights or 'random (real durations)'}"
    )
    if device.type == "cuda":
        print(
            f"TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32}; "
            f"cuDNN benchmark {torch.backends.cudnn.benchmark}"
        )
    print(f"{len(items)} sentences, {audio:.1f} s of audio; paragraph of {data['paragraph']['words']} words")
    rows, ttfa_rows = [], []
    for variant, m, autocast in variants(model, args.variants.split(","), device):
        for bs in batch_sizes:
            if time.perf_counter() - start > args.budget_s:
                rows.append((variant, bs, "skipped (time budget)"))
                continue
            try:
                sps, aps, mb = throughput(m, items, pack, device, bs, autocast)
                rows.append((variant, bs, f"{sps:10.1f} {aps:10.1f} {mb:9.0f}"))
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                rows.append((variant, bs, f"failed: {str(exc).splitlines()[0][:70]}"))
            print(f"  {variant} batch {bs}: {rows[-1][2].strip()}", flush=True)
        for limit, item in data["paragraph"]["first_chunk"].items():
            if (args.quick and limit != "25") or (
                time.perf_counter() - start > args.budget_s and limit != "100"
            ):
                continue
            try:
                t, secs, mb = first_audio(m, item, pack, device, autocast, repeats)
                ttfa_rows.append(
                    (variant, int(limit), f"{len(item['ids']) - 2:8d} {secs:8.2f} {1000 * t:9.1f} {mb:9.0f}")
                )
            except RuntimeError as exc:
                ttfa_rows.append((variant, int(limit), f"failed: {str(exc).splitlines()[0][:70]}"))
    print(f"\n## Throughput: {len(items)} sentences, padded batches (similar lengths together), {name}")
    print(f"{'variant':8s} {'batch':>5s} {'sent/s':>10s} {'audio s/s':>10s} {'peak MB':>9s}")
    for variant, bs, text in rows:
        print(f"{variant:8s} {bs:5d} {text}")
    print(
        f"\n## Time to first audio: {data['paragraph']['words']}-word paragraph, first chunk, batch 1, median of {repeats}"
    )
    print(f"{'variant':8s} {'limit':>5s} {'phonemes':>8s} {'audio s':>8s} {'TTFA ms':>9s} {'peak MB':>9s}")
    for variant, limit, text in ttfa_rows:
        print(f"{variant:8s} {limit:5d} {text}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
