"""Are the aligner's durations sensible? Two numeric checks and a picture, on ljspeech-mini.

1. Known durations: the official model speaks each LJSpeech sentence (af_heart); its own durations
   are then exact ground truth for that audio. The aligner (trained on the LJSpeech clips only)
   aligns the synthetic audio and is scored against them.
2. Real clips: the aligner's durations of the LJSpeech recordings against the durations the
   pretrained model predicts for the same phonemes (rescaled to the clip's length).
Both are compared with a uniform split (every phoneme gets the mean duration) as a floor.
3. ``alignment.png``: the learned log-attention of one clip, the MAS path (white) and the
   pretrained model's rescaled boundaries (red ticks on top).

Usage: ``python bench/alignment_check.py --run /tmp/koel-finetune-demo/run`` (a finished
``koel train`` run, whose cache holds the aligner). Needs Pillow for the picture.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def scores(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    inner = slice(1, -1)  # boundary tokens hold silence, not phonemes
    f, t = found[inner].astype(float), truth[inner].astype(float)
    ends_f, ends_t = np.cumsum(found)[:-1], np.cumsum(truth)[:-1]
    return {
        "mae": float(np.abs(f - t).mean()),
        "within1": float((np.abs(f - t) <= 1).mean()),
        "r": float(np.corrcoef(f, t)[0, 1]) if f.std() > 0 and t.std() > 0 else 0.0,
        "boundary_ms": float(25.0 * np.abs(ends_f - ends_t).mean()),
    }


def uniform(truth: np.ndarray) -> np.ndarray:
    n = len(truth)
    inner_total = truth[1:-1].sum()
    u = np.full(n, inner_total / (n - 2))
    u[0], u[-1] = truth[0], truth[-1]
    return np.rint(u)


def picture(logp: np.ndarray, durations: np.ndarray, reference: np.ndarray, path: Path) -> None:
    from PIL import Image

    prob = np.exp(logp.T)  # [T, F]
    img = (255 * (prob / prob.max()) ** 0.5).astype(np.uint8)
    rgb = np.stack([img // 3, img // 2, img], axis=-1)
    bounds = np.concatenate([[0], np.cumsum(durations)])
    for t in range(len(durations)):
        rgb[t, bounds[t] : bounds[t + 1]] = 255
    ref = np.concatenate([[0], np.cumsum(reference)]).round().astype(int)
    canvas = np.zeros((rgb.shape[0] + 6, rgb.shape[1], 3), dtype=np.uint8)
    canvas[6:] = rgb
    for x in ref[1:-1]:
        canvas[:5, min(x, rgb.shape[1] - 1)] = (255, 40, 40)
    image = Image.fromarray(canvas[::-1]).resize((canvas.shape[1] * 4, canvas.shape[0] * 4), Image.NEAREST)
    image.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a koel train output folder")
    parser.add_argument("--png", default=None, help="where to write the picture (default RUN/alignment.png)")
    args = parser.parse_args()

    from safetensors.torch import load_file

    from koel.train.aligner import AlignerNet, align
    from koel.train.dataset import ManifestEntry, check_clip
    from koel.voices import VoiceStore
    from koel.weights.loading import load_model

    torch.set_num_threads(1)
    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    cache = Path(cfg["data"]["cache_dir"] or run / "cache")
    aligner_file = max(cache.glob("aligner-*.pt"), key=lambda p: p.stat().st_mtime)
    net = AlignerNet(channels=cfg["aligner"]["channels"])
    net.load_state_dict(torch.load(aligner_file, weights_only=True))
    prior = cfg["aligner"]["prior_scale"]
    items = [
        json.loads(p.read_text())["item"] for p in sorted(cache.glob("*.json")) if '"item"' in p.read_text()
    ]
    items = [i for i in items if i is not None]

    model = load_model()
    voice = VoiceStore().get("af_heart")
    real_rows, synth_rows, uni_real, uni_synth = [], [], [], []
    synth_dir = run / "alignment-synthetic"
    synth_dir.mkdir(exist_ok=True)
    import soundfile as sf

    from koel.train.config import DataConfig

    data_cfg = DataConfig(**{k: v for k, v in cfg["data"].items() if k in DataConfig.__dataclass_fields__})
    picture_done = False
    for item in items:
        ids = load_file(item["cache_file"])["ids"][None]
        ref = voice.row(len(item["phonemes"]))
        found, logp = align(net, item["cache_file"], prior)
        with torch.no_grad():
            _, logits = model.prosody_features(ids, None, ref[:, 128:])
            pred = torch.sigmoid(logits).sum(-1)[0].numpy()
        scale = found[1:-1].sum() / pred[1:-1].sum()
        predicted = np.concatenate([[found[0]], pred[1:-1] * scale, [found[-1]]])
        real_rows.append(scores(found, predicted))
        uni_real.append(scores(uniform(found), predicted))
        if not picture_done:
            picture(logp, found, predicted, Path(args.png) if args.png else run / "alignment.png")
            picture_done = True
        # known durations: the model's own speech
        out = model.synthesize(ids, ref)
        path = synth_dir / f"{item['id']}.wav"
        sf.write(str(path), out.audio[0].numpy(), 24_000)
        entry = ManifestEntry(f"synth-{item['id']}", str(path), item["text"], phonemes=item["phonemes"])
        synth = check_clip(entry, data_cfg, synth_dir)
        if not hasattr(synth, "cache_file"):
            continue
        truth = out.durations[0].numpy()
        got, _ = align(net, synth.cache_file, prior)
        if len(got) == len(truth) and got.sum() == truth.sum():
            synth_rows.append(scores(got, truth))
            uni_synth.append(scores(uniform(truth), truth))

    def summary(rows: list[dict[str, float]]) -> str:
        return " | ".join(
            f"{np.mean([r[k] for r in rows]):.3f}" for k in ("mae", "within1", "r", "boundary_ms")
        )

    print(f"aligner: {aligner_file.name}; {len(items)} LJSpeech clips")
    print("| check | durations | MAE (frames) | within 1 frame | Pearson r | mean boundary error (ms) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| known durations (model's own speech, {len(synth_rows)} clips) | aligner | {summary(synth_rows)} |"
    )
    print(f"| known durations | uniform split | {summary(uni_synth)} |")
    print(
        f"| real LJSpeech clips vs pretrained prediction ({len(real_rows)} clips) | aligner | {summary(real_rows)} |"
    )
    print(f"| real LJSpeech clips vs pretrained prediction | uniform split | {summary(uni_real)} |")
    print("(one frame = 25 ms; boundary tokens excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
