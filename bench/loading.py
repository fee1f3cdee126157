"""Model loading: first load (int8 export -> float conversion), cached load, and peak memory.

    python bench/loading.py

Each measurement runs in a fresh subprocess with its own empty cache folder, so nothing is
shared between runs; peak RSS is the child's ru_maxrss.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, time, os
t = time.perf_counter()
from koel.weights.loading import load_model
imported = time.perf_counter()
model = load_model()
done = time.perf_counter()
print(json.dumps({"import": imported - t, "seconds": done - imported,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(cache: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**__import__("os").environ, "KOEL_CACHE_DIR": cache},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        first = run(cache)
        cached = [run(cache) for _ in range(3)]
    print(f"{'load':24s} {'load_model s':>12s} {'+ import s':>11s} {'peak RSS MB':>12s}")
    print(
        f"{'first (convert + cache)':24s} {first['seconds']:12.2f} {first['import']:11.2f} {first['peak_mb']:12.0f}"
    )
    for i, c in enumerate(cached):
        print(f"{f'cached #{i + 1}':24s} {c['seconds']:12.2f} {c['import']:11.2f} {c['peak_mb']:12.0f}")


if __name__ == "__main__":
    main()
