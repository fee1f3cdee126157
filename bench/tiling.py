"""What running the generator in time tiles costs in quality, on long chunks (the fast engine's CPU default).

    python bench/tiling.py [--voices af_heart am_michael] [--tile 200] [--tight-windows] [--passages 8]

Long paragraphs are chunked by koel's front end into chunks of up to 510 phonemes (20-35 s of
audio). Each chunk is synthesised twice by the same fast engine, untiled and with the generator in
crossfaded tiles of at most ``--tile`` frames (80 per second), each computed on a window of the same
width as the engine does (``--tight-windows``: on itself plus margins), from the same phonemes, voice
and durations.
Printed: log-mel correlation of tiled vs untiled (whole chunk, and in 0.2 s windows around each
tile edge that holds sound), Whisper base WER of both against the text, DNSMOS of both, and the synthesis time.
Needs ../shared/voices and the bench extras.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
SHARED_VOICES = Path(__file__).resolve().parents[2] / "shared" / "voices"
SR = 24000

PASSAGES = [
    "The river had been rising for three days before anyone in the valley took it seriously. "
    "At first the water only covered the low meadow where the cows grazed in summer, and the farmers "
    "joked that the fish would enjoy the grass. By the second night it had reached the old stone wall, "
    "and by the third morning the bridge to the market town was closed, its railings hidden under a "
    "brown and restless current that carried branches, fence posts and, once, a bewildered duck.",
    "Learning a musical instrument as an adult is humbling in a very particular way. You already know "
    "what good music sounds like, so every wrong note is obvious, and your fingers refuse to follow the "
    "instructions your brain sends them. Yet the progress, when it comes, is strangely satisfying. One "
    "evening a passage that felt impossible for weeks simply works, and you play it again and again to "
    "make sure it was not an accident.",
    "The museum's newest exhibit tells the story of the first long distance telephone line in the "
    "region. Visitors can listen to recordings of operators describing their work, examine the heavy "
    "switchboards they used, and read letters from families who heard a distant relative's voice for "
    "the first time. The curators spent almost two years collecting the objects, many of which had "
    "been stored in attics and barns for generations.",
    "Our neighbour keeps bees at the bottom of her garden, in four white hives that hum quietly all "
    "summer long. She says the bees know her by now and rarely bother to sting, although she still "
    "wears a veil when she opens the hives to check on the honey. Every autumn she leaves a jar on our "
    "doorstep with a handwritten label, and every autumn we promise to learn how to keep bees ourselves.",
    "Building the small wooden boat took much longer than the instructions suggested. The hull needed "
    "careful sanding between each coat of varnish, the seats had to be fitted twice because the first "
    "measurements were wrong, and the paint refused to dry during a damp and foggy week in October. "
    "When the boat finally floated on the lake, level and dry inside, the whole family cheered from the "
    "shore as if it had crossed an ocean.",
    "Early trains were noisy, dirty and uncomfortable, but they changed the way people thought about "
    "distance. A journey that once took a week by coach could be made in a single day, and towns that "
    "had been isolated for centuries were suddenly connected to distant cities. Newspapers arrived "
    "while their stories were still fresh, fresh fish appeared on inland tables, and ordinary families "
    "began, for the first time, to travel simply for pleasure.",
    "The night shift at the observatory is mostly quiet work. The astronomers check the weather, "
    "calibrate the instruments and then wait while the telescope follows its target across the sky, "
    "collecting faint light that left its source millions of years ago. Between observations they "
    "drink too much coffee, argue about football and watch the numbers on their screens, hoping for "
    "the small surprise that might turn an ordinary night into a discovery.",
    "Grandfather's workshop smelled of sawdust, machine oil and the peppermints he kept in a tin on "
    "the windowsill. Every tool had its place on the wall, outlined in black paint so that a missing "
    "chisel was obvious at a glance. He let us hammer nails into scraps of wood while he worked, and "
    "he never once complained about the noise, although he sometimes pretended to be deaf when we "
    "asked for another peppermint.",
]


def _windows_corr(a: np.ndarray, b: np.ndarray, centers: list[int], half: int) -> float:
    """Smallest log-mel correlation of ``a`` and ``b`` in windows around ``centers``, among the windows
    that hold sound (within 40 dB of ``a``'s overall level; in digital silence the correlation of two
    log spectra measures nothing but rounding noise)."""
    from speed import log_mel_correlation

    level = np.sqrt(np.mean(a.astype(np.float64) ** 2)) + 1e-12
    values = []
    for c in centers:
        lo, hi = max(0, c - half), c + half
        if hi > min(len(a), len(b)) or np.sqrt(np.mean(a[lo:hi].astype(np.float64) ** 2)) < level / 100:
            continue
        values.append(log_mel_correlation(a[lo:hi], b[lo:hi]))
    return float(np.min(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voices", nargs="+", default=["af_heart", "am_michael"])
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        help="longest tile in generator frames (default: the engine's, 80 per second)",
    )
    parser.add_argument(
        "--tight-windows",
        action="store_true",
        help="compute each tile on itself plus its margins (default: on the engine's fixed-width windows)",
    )
    parser.add_argument("--passages", type=int, default=len(PASSAGES))
    parser.add_argument("--no-asr", action="store_true", help="skip Whisper and DNSMOS")
    parser.add_argument(
        "--local-stats",
        action="store_true",
        help="each tile normalises over its own span (no running statistics)",
    )
    args = parser.parse_args()
    if SHARED_VOICES.is_dir():
        os.environ.setdefault("KOEL_VOICES_DIR", str(SHARED_VOICES))

    import torch

    from koel.backends.auto import CPU_TILE_FRAMES, FastTorchEngine, tune_cpu_process
    from koel.model.fast import stream_tiles, tile_bounds
    from koel.pipeline import Pipeline
    from koel.voices import VoiceStore
    from koel.weights.loading import load_model
    from model_quality import dnsmos
    from speed import log_mel_correlation

    tune_cpu_process(2)
    engine = FastTorchEngine(load_model(), tile_frames=0)
    if args.tile is None:
        args.tile = CPU_TILE_FRAMES
    pipe = Pipeline(engine, voice="af_heart", lang="a")
    store = VoiceStore()
    chunks = [c for p in PASSAGES[: args.passages] for c in pipe.chunks(p, lang="a")]
    rows: list[dict] = []
    times = {"untiled": 0.0, "tiled": 0.0}
    for name in args.voices:
        voice = store.get(name)
        for chunk in chunks:
            request = pipe._request(chunk, voice, 1.0)
            torch.manual_seed(0)
            t = time.perf_counter()
            _, pieces = engine.stream(request, first_frames=1 << 30)
            whole = np.concatenate(list(pieces))
            times["untiled"] += time.perf_counter() - t
            torch.manual_seed(0)
            t = time.perf_counter()
            tiles = stream_tiles(
                engine.model,
                torch.tensor([request.ids]),
                torch.as_tensor(request.style).reshape(1, -1),
                first_frames=args.tile,
                frames=args.tile,
                running_stats=not args.local_stats,
                fixed_width=not args.tight_windows,
            )
            tiled = torch.cat(list(tiles.pieces)).numpy()
            times["tiled"] += time.perf_counter() - t
            n_frames = len(whole) // 300
            edges = [300 * b for b in tile_bounds(n_frames, args.tile, args.tile)[1:-1]]
            rows.append(
                {
                    "voice": name,
                    "text": chunk.text,
                    "seconds": len(whole) / SR,
                    "edges": len(edges),
                    "corr": log_mel_correlation(whole, tiled),
                    "edge_corr": _windows_corr(whole, tiled, edges, SR // 10),
                    "whole": whole,
                    "tiled": tiled,
                }
            )
            print(
                f"{name:11s} {rows[-1]['seconds']:5.1f} s  {len(edges)} edges  log-mel corr "
                f"{rows[-1]['corr']:.4f}  at edges (min) {rows[-1]['edge_corr']:.4f}",
                flush=True,
            )
    audio_s = sum(r["seconds"] for r in rows)
    print(f"\n{len(rows)} chunks, {audio_s:.0f} s of audio, {sum(r['edges'] for r in rows)} tile edges")
    print(
        f"log-mel corr tiled vs untiled: mean {np.mean([r['corr'] for r in rows]):.4f}, "
        f"min {np.min([r['corr'] for r in rows]):.4f}; 0.2 s around edges: min "
        f"{np.nanmin([r['edge_corr'] for r in rows]):.4f}"
    )
    print(
        f"synthesis, s per audio s: untiled {times['untiled'] / audio_s:.3f}, tiled {times['tiled'] / audio_s:.3f}"
    )
    if args.no_asr:
        return
    from whisper_util import load_whisper, normalized_wer, transcribe

    asr = load_whisper()
    print(f"\n{'':9s} {'WER %':>7s} {'DNSMOS':>7s}")
    for kind in ("whole", "tiled"):
        hyps = [transcribe(asr, r[kind]).text for r in rows]
        wer = normalized_wer([r["text"] for r in rows], hyps)
        mos = np.mean([dnsmos(r[kind]) for r in rows])
        print(f"{'untiled' if kind == 'whole' else 'tiled':9s} {100 * wer:7.2f} {mos:7.3f}")


if __name__ == "__main__":
    main()
