"""English phonemising speed of koel's front end (words per second), normally run on one core.

taskset -c 0 python bench/frontend_speed.py [--words 20000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROSE = (
    "It was a bright cold day in April, and the clocks were striking thirteen. "
    "Winston Smith, his chin nuzzled into his breast in an effort to escape the vile wind, slipped quickly "
    "through the glass doors of Victory Mansions, though not quickly enough to prevent a swirl of gritty dust "
    "from entering along with him. The hallway smelt of boiled cabbage and old rag mats. "
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--words", type=int, default=20_000, help="approximate words per measurement")
    args = p.parse_args(argv)
    from koel.text import FrontEnd

    numbers = (HERE / "sentences_numbers.txt").read_text(encoding="utf-8")
    corpora = {"prose": PROSE, "number-dense": numbers}
    t = time.perf_counter()
    fes = {True: FrontEnd("a"), False: FrontEnd("a", normalize=False)}
    fes[True].phonemize("Warm up, 9:30.")
    print(f"first load (spaCy, misaki lexicons, espeak): {time.perf_counter() - t:.1f} s")
    for name, unit in corpora.items():
        reps = max(1, args.words // len(unit.split()))
        text = (unit + "\n") * reps
        n = len(text.split())
        for normalize, fe in fes.items():
            t = time.perf_counter()
            phonemes = sum(len(c.phonemes) for c in fe.chunks(text))
            dt = time.perf_counter() - t
            label = "koel (normalise)" if normalize else "plain misaki"
            print(
                f"{name:13s} {label:17s} {n:7d} words {dt:6.1f} s {n / dt:7.0f} words/s {phonemes / dt:8.0f} phonemes/s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
