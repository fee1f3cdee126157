"""Does batching same-time short requests raise throughput? Engine-level and server-level measurements.

1. Engine: ``k`` short utterances through ``TorchEngine.run`` in one padded batch, against the same
   ``k`` run one by one (alternating rounds, so machine noise hits both alike). Prints audio seconds
   made per wall second for each ``k``.
2. Server: ``koel serve`` with and without ``--batch``, ``--clients`` clients each sending short
   whole-file requests back to back for ``--seconds``; prints requests/s, audio s/s, p50/p95 latency
   and how many chunks were batched (from /health). Alternates off/on ``--rounds`` times.

    python bench/serve_batching.py --engine-only
    python bench/serve_batching.py --clients 8 --seconds 40 --rounds 2
    python bench/serve_batching.py --server-only --server-args "--engine torch"

The server runs koel's default engine unless ``--server-args`` picks another; on a CPU the default
('fast') runs one chunk per call whatever it is handed, so batching there can only cost, while the
plain 'torch' engine runs a batch as one padded forward pass.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import cpu_seconds, wait_healthy

SENTENCES = [
    "Hello, and welcome back.",
    "The train leaves at noon.",
    "Can you hear me now?",
    "Please close the door.",
    "It is cold outside today.",
    "Thank you for waiting.",
    "The meeting starts soon.",
    "Turn left at the bridge.",
]
VOICES_DIR = Path(__file__).resolve().parents[2] / "shared" / "voices"


def engine_bench(sizes: list[int], rounds: int) -> None:
    import torch

    from koel.backends.auto import default_engine
    from koel.backends.torch_engine import TorchEngine
    from koel.pipeline import Pipeline
    from koel.voices import VoiceStore

    # The plain PyTorch engine, set up as `koel serve --engine torch` sets it up (threads, malloc),
    # allowed batches as large as the largest size measured.
    engine = default_engine("torch", "cpu")
    assert isinstance(engine, TorchEngine)
    engine.max_batch = max(sizes)
    pipe = Pipeline(
        engine, voice="af_heart", voices=VoiceStore(os.environ.get("KOEL_VOICES_DIR", VOICES_DIR))
    )
    voice = pipe.voice
    requests = []
    for text in SENTENCES:
        chunk = next(iter(pipe.chunks(text, lang="a")))
        requests.append(pipe._request(chunk, voice, 1.0))  # the pipeline's own request builder
    tokens = [len(r.ids) for r in requests]
    print(
        f"torch threads {torch.get_num_threads()}; {len(requests)} sentences of {min(tokens)}-{max(tokens)} tokens"
    )
    engine.run(requests[:2])  # warm-up
    print("\naudio seconds per wall second (and per CPU second of this process: robust on a shared machine)")
    print(f"{'k':>3s} {'one by one':>18s} {'batched':>18s} {'speed-up wall':>14s} {'speed-up CPU':>13s}")
    for k in sizes:
        single, batched = [], []
        group = [requests[i % len(requests)] for i in range(k)]
        engine.run(group)  # first calls with new shapes are slow (kernel set-up): warm both ways
        for r in group:
            engine.run([r])
        for _ in range(rounds):
            single.append(_measure(lambda g=group: sum(len(engine.run([r])[0].audio) for r in g)))
            batched.append(_measure(lambda g=group: sum(len(r.audio) for r in engine.run(g))))
        sw, sc = max(w for w, _ in single), max(c for _, c in single)
        bw, bc = max(w for w, _ in batched), max(c for _, c in batched)
        print(f"{k:3d} {sw:8.2f} ({sc:6.2f} cpu) {bw:8.2f} ({bc:6.2f} cpu) {bw / sw:13.2f}x {bc / sc:12.2f}x")


def _measure(run) -> tuple[float, float]:
    """(audio s per wall s, audio s per CPU s) of ``run()``, which returns a number of samples."""
    wall, cpu = time.perf_counter(), time.process_time()
    audio = run() / 24_000
    return audio / (time.perf_counter() - wall), audio / (time.process_time() - cpu)


async def _client(url: str, deadline: float, seed: int, latencies: list[float], audio: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        i = seed
        while time.monotonic() < deadline:
            text = SENTENCES[i % len(SENTENCES)]
            i += 1
            start = time.monotonic()
            r = await client.post(
                "/v1/audio/speech",
                json={"input": text, "voice": "af_heart", "response_format": "pcm", "stream": False},
            )
            r.raise_for_status()
            latencies.append(time.monotonic() - start)
            audio.append(len(r.content) / 2 / 24_000)


def _serve(port: int, batch: bool, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("KOEL_VOICES_DIR", str(VOICES_DIR))
    cmd = [sys.executable, "-m", "koel.cli", "serve", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen([*cmd, *extra, "--batch" if batch else "--no-batch"], env=env)


def server_bench(clients: int, seconds: float, rounds: int, port: int, extra: list[str]) -> None:
    url = f"http://127.0.0.1:{port}"
    print(f"\nserver: koel serve {' '.join(extra)}; {clients} clients, {seconds:.0f} s per run")
    print(
        f"\n{'batching':>8s} {'round':>5s} {'req/s':>6s} {'audio s/s':>9s} {'audio s/CPU s':>13s} "
        f"{'p50 s':>6s} {'p95 s':>6s} {'batched':>9s} engine"
    )
    for round_ in range(rounds):
        for batch in (False, True):
            proc = _serve(port, batch, extra)
            try:
                wait_healthy(url, proc)
                latencies: list[float] = []
                audio: list[float] = []
                asyncio.run(_load(url, clients, 5.0, [], []))  # warm the server up
                start, cpu = time.monotonic(), cpu_seconds(proc.pid)
                asyncio.run(_load(url, clients, seconds, latencies, audio))
                wall, cpu = time.monotonic() - start, cpu_seconds(proc.pid) - cpu
                health = httpx.get(url + "/health").json()
            finally:
                proc.terminate()
                proc.wait(60)
            latencies.sort()
            p50, p95 = latencies[len(latencies) // 2], latencies[int(0.95 * (len(latencies) - 1))]
            print(
                f"{'on' if batch else 'off':>8s} {round_:5d} {len(latencies) / wall:6.2f} {sum(audio) / wall:9.2f} "
                f"{sum(audio) / cpu:13.2f} "
                f"{p50:6.2f} {p95:6.2f} {health['batched_chunks']:4d}/{health['chunks']:<4d} {health['engine']}",
                flush=True,
            )


async def _load(url: str, clients: int, seconds: float, latencies: list[float], audio: list[float]) -> None:
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, deadline, i, latencies, audio) for i in range(clients)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-only", action="store_true")
    parser.add_argument("--server-only", action="store_true")
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--port", type=int, default=8892)
    parser.add_argument(
        "--server-args", default="", help="extra 'koel serve' arguments, e.g. '--engine torch'"
    )
    args = parser.parse_args()
    if not args.server_only:
        engine_bench([int(k) for k in args.sizes.split(",")], args.rounds)
    if not args.engine_only:
        server_bench(args.clients, args.seconds, args.rounds, args.port, args.server_args.split())


if __name__ == "__main__":
    main()
