"""Stage parity of koel's PyTorch model with the official int8 export (onnxruntime), as a table.

    python bench/parity.py [--strings 20]

Needs ../shared/voices for af_heart, am_michael and bf_emma (falls back to the bundled Japanese
voices otherwise). Prints per-stage correlation / max error / relative L2 and duration agreement.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from koel.parity import compare, parity_strings
from koel.paths import cache_dir
from koel.reference import OfficialOnnxReference
from koel.tokenizer import encode, with_boundaries
from koel.voices import VoiceStore
from koel.weights.loading import load_model
from koel.weights.onnx_import import official_onnx_path

SHARED_VOICES = Path(__file__).resolve().parents[2] / "shared" / "voices"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strings", type=int, default=20)
    args = parser.parse_args()
    if SHARED_VOICES.is_dir():
        os.environ.setdefault("KOEL_VOICES_DIR", str(SHARED_VOICES))
    store = VoiceStore()
    names = (
        ["af_heart", "am_michael", "bf_emma"]
        if SHARED_VOICES.is_dir()
        else ["jf_alpha", "jm_kumo", "jf_nezumi"]
    )
    voices = [store.get(n) for n in names]
    model = load_model()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    reference = OfficialOnnxReference(
        official_onnx_path(cache if os.access(cache, os.W_OK) else Path(tempfile.mkdtemp()))
    )
    rows: dict[str, list] = {}
    equal = total = 0
    rms = []
    for i, ps in enumerate(parity_strings(args.strings)):
        v = voices[i % len(voices)]
        ids = with_boundaries(encode(ps))
        r = compare(model, reference, ids, v.row(len(ps)))
        for stage, s in r.stages.items():
            rows.setdefault(stage, []).append(s)
        equal += round(r.durations_equal * len(ids))
        total += len(ids)
        rms.append(r.rms_ratio)
        print(
            f"string {i:2d}: {len(ps):3d} phonemes, voice {v.name:10s} durations equal {r.durations_equal:.3f}, "
            f"log-mel corr {r.stages['log_mel'].corr:.4f}"
        )
    print(f"\n{'stage':18s} {'min corr':>9s} {'mean corr':>10s} {'max err':>10s} {'mean relL2':>11s}")
    for stage, stats in rows.items():
        corr = [s.corr for s in stats]
        print(
            f"{stage:18s} {min(corr):9.4f} {np.mean(corr):10.4f} {max(s.max_err for s in stats):10.4g} "
            f"{np.mean([s.rel_l2 for s in stats]):11.4f}"
        )
    print(f"\ndurations identical: {equal}/{total} tokens ({equal / total:.1%}); voices {', '.join(names)}")
    print(
        f"audio RMS ratio koel/export(/1.5): median {np.median(rms):.3f} (range {min(rms):.3f}..{max(rms):.3f})"
    )


if __name__ == "__main__":
    main()
