"""Load test for ``koel serve`` on loopback: many concurrent clients, short and long inputs, streaming.

Starts ``koel serve`` in a subprocess (or targets a running one with ``--url``, loopback only), asks
once for every test text as WAV to learn its exact length (this also warms the server up), then runs
``--clients`` clients for ``--duration`` seconds. Each client loops over a mix of requests: short and
long inputs; whole-file, streamed, server-sent-event and captioned responses; every output format.
In-flight requests at the end are waited for and counted.

A response counts as good only if its status is 200, its bytes arrive completely (no cut stream),
it decodes, and its length matches the reference (lossless formats: exactly; lossy ones: within
their priming and padding). The server's RSS is sampled every second; growth is measured from the end
of the warm-up to the end of the load: median RSS over the last 30 s of the load phase against the
median over the first 30 s after the warm-up (window peaks compared too); both windows lie before the
drain, whose mix (only long requests left) differs.

    python bench/load_test.py                           # 16 clients, 120 s, real model
    python bench/load_test.py --clients 16 --duration 180 --server-args "--batch"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from koel.audio import decode

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
LOSSY_SLACK_S = 0.15
RSS_WINDOW_S = 30.0
SHORT = [
    ("Hello, and welcome to the koel speech server.", "af_heart"),
    ("The quick brown fox jumps over the lazy dog.", "am_michael"),
    ("Can you hear me clearly right now?", "bf_emma"),
    ("Please remember to water the plants on Tuesday.", "af_bella:0.6+am_adam:0.4"),
    ("It is seven degrees outside, so take a warm coat.", "af_heart"),
    ("Thank you for calling; your order has shipped.", "am_michael"),
]
LONG = [
    (
        "Long ago, in a small village by the sea, there lived an old fisherman and his wife. Every morning "
        "he rowed out past the rocks, and every evening he came home with a basket of silver fish. One day "
        "his net brought up something stranger than fish: a small golden box, sealed with wax and covered "
        "in tiny letters that nobody in the village could read.",
        "af_heart",
    ),
    (
        "To install the software, first download the archive from the release page. Unpack it into a "
        "folder of your choice, then open a terminal in that folder. Run the setup script and follow the "
        "prompts; it asks for a data directory and a port. When it finishes, start the service and open "
        "the address it prints in your browser.",
        "am_michael",
    ),
    (
        "The committee met on Thursday to review the budget for the coming year. Most members agreed that "
        "the library needed new shelves and longer opening hours, but there was a lively debate about the "
        "cost of repairing the roof. In the end they voted to spend the reserve fund on the roof and to "
        "raise money for the shelves with a book sale in the spring.",
        "bf_emma",
    ),
]
# kind: (weight, long input?, how the response is asked for)
MIX = {
    "short": (30, False, "file"),
    "short-stream": (25, False, "stream"),
    "short-sse": (10, False, "sse"),
    "long-stream": (20, True, "stream"),
    "long-captioned": (15, True, "captioned"),
}


@dataclass
class Result:
    kind: str
    fmt: str
    status: int = 0
    ttfb: float = float("nan")
    latency: float = float("nan")
    audio_s: float = 0.0
    ok: bool = False
    error: str = ""


@dataclass
class Memory:
    samples: list[tuple[float, int]] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def sample_memory(pid: int, memory: Memory, stop: asyncio.Event) -> None:
    start = time.monotonic()
    while not stop.is_set():
        memory.samples.append((time.monotonic() - start, rss_bytes(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def check_length(samples: int, reference: int, fmt: str, exact: bool) -> str:
    """Empty if ``samples`` is a complete rendering of the reference, else why not."""
    slack = int(LOSSY_SLACK_S * 24_000)
    if fmt in ("wav", "pcm", "flac") and exact:
        return "" if samples == reference else f"{samples} samples, expected {reference}"
    low, high = (reference, reference + slack) if exact else (reference - slack, reference + 2 * slack)
    return "" if low <= samples <= high else f"{samples} samples, expected about {reference}"


async def one_request(
    client: httpx.AsyncClient, kind: str, rng: random.Random, refs: dict, exact: bool
) -> Result:
    _, long, mode = MIX[kind]
    text, voice = rng.choice(LONG if long else SHORT)
    fmt = rng.choice(FORMATS)
    result = Result(kind, fmt)
    body = {"model": "kokoro", "input": text, "voice": voice, "response_format": fmt}
    path = "/v1/audio/speech"
    if mode == "file":
        body["stream"] = False
    elif mode == "sse":
        body["stream_format"] = "sse"
    elif mode == "captioned":
        path, body["stream"] = "/v1/audio/captioned_speech", False
    start = time.monotonic()
    data = bytearray()
    try:
        async with client.stream("POST", path, json=body) as response:
            result.status = response.status_code
            async for part in response.aiter_raw():
                if part and result.ttfb != result.ttfb:  # still NaN
                    result.ttfb = time.monotonic() - start
                data += part
        result.latency = time.monotonic() - start
        if result.status != 200:
            result.error = f"HTTP {result.status}: {bytes(data[:200]).decode(errors='replace')}"
            return result
        audio = await asyncio.to_thread(_audio_of, bytes(data), mode, fmt)
        result.audio_s = len(audio) / 24_000
        problem = check_length(len(audio), refs[(text, voice)], fmt, exact)
        result.ok, result.error = not problem, problem
    except (httpx.HTTPError, ValueError) as exc:
        result.latency = time.monotonic() - start
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _audio_of(data: bytes, mode: str, fmt: str):
    if mode == "sse":
        events = [
            json.loads(chunk[6:]) for chunk in data.decode().split("\n\n") if chunk.startswith("data: ")
        ]
        if not events or events[-1]["type"] != "speech.audio.done":
            raise ValueError("the event stream has no speech.audio.done event")
        data = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    elif mode == "captioned":
        body = json.loads(data)
        if not body["timestamps"]:
            raise ValueError("captioned response without timestamps")
        data = base64.b64decode(body["audio"])
    return decode(data, fmt="pcm" if fmt == "pcm" else None)[0]


async def client_loop(
    url: str, seed: int, deadline: float, refs: dict, exact: bool, results: list[Result]
) -> None:
    rng = random.Random(seed)
    kinds, weights = list(MIX), [w for w, _, _ in MIX.values()]
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(900, connect=30)) as client:
        while time.monotonic() < deadline:
            results.append(await one_request(client, rng.choices(kinds, weights)[0], rng, refs, exact))


async def references(url: str) -> dict:
    refs = {}
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        for text, voice in SHORT + LONG:
            r = await client.post(
                "/v1/audio/speech",
                json={"input": text, "voice": voice, "response_format": "wav", "stream": False},
            )
            r.raise_for_status()
            refs[(text, voice)] = len(decode(r.content)[0])
    return refs


def pct(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def report(
    results: list[Result],
    memory: Memory,
    wall: float,
    warmup: float,
    duration: float,
    health: dict,
    cpu_s: float | None,
) -> dict:
    print(
        f"\n{'kind':15s} {'n':>5s} {'good':>5s} {'5xx':>4s} {'other':>5s} "
        f"{'p50 lat':>8s} {'p95 lat':>8s} {'p50 ttfb':>9s} {'p95 ttfb':>9s} {'audio s':>8s}"
    )
    rows = {}
    for kind in [*MIX, "all"]:
        rs = [r for r in results if kind in ("all", r.kind)]
        if not rs:
            continue
        good = sum(r.ok for r in rs)
        fivexx = sum(500 <= r.status < 600 for r in rs)
        row = {
            "n": len(rs),
            "good": good,
            "5xx": fivexx,
            "other_failures": len(rs) - good - fivexx,
            "p50_latency": pct([r.latency for r in rs], 50),
            "p95_latency": pct([r.latency for r in rs], 95),
            "p50_ttfb": pct([r.ttfb for r in rs], 50),
            "p95_ttfb": pct([r.ttfb for r in rs], 95),
            "audio_s": sum(r.audio_s for r in rs),
        }
        rows[kind] = row
        print(
            f"{kind:15s} {row['n']:5d} {good:5d} {fivexx:4d} {row['other_failures']:5d} "
            f"{row['p50_latency']:8.2f} {row['p95_latency']:8.2f} {row['p50_ttfb']:9.2f} {row['p95_ttfb']:9.2f} "
            f"{row['audio_s']:8.1f}"
        )
    failures = [r for r in results if not r.ok]
    for r in failures[:10]:
        print(f"  failed: {r.kind} {r.fmt}: {r.error}")
    print(
        f"\nwall {wall:.0f} s, audio produced {rows['all']['audio_s']:.0f} s "
        f"({rows['all']['audio_s'] / wall:.2f} s of audio per s)"
    )
    mem = {}
    if memory.samples:
        # Both windows lie in the full-load phase (the drain at the end runs only long requests).
        first = [b for t, b in memory.samples if warmup <= t < warmup + RSS_WINDOW_S] or [
            memory.samples[-1][1]
        ]
        last = [b for t, b in memory.samples if duration - RSS_WINDOW_S <= t < duration] or [
            memory.samples[-1][1]
        ]
        growth = (statistics.median(last) - statistics.median(first)) / statistics.median(first) * 100
        peak_growth = (max(last) - max(first)) / max(first) * 100
        mem = {
            "rss_start_mb": memory.samples[0][1] / 2**20,
            "rss_first_window_median_mb": statistics.median(first) / 2**20,
            "rss_last_window_median_mb": statistics.median(last) / 2**20,
            "rss_peak_mb": max(b for _, b in memory.samples) / 2**20,
            "growth_pct": growth,
            "peak_growth_pct": peak_growth,
        }
        print(
            f"RSS: {mem['rss_start_mb']:.0f} MB when the load began; median {mem['rss_first_window_median_mb']:.0f} MB "
            f"in s {warmup:.0f}-{warmup + RSS_WINDOW_S:.0f} of the load, {mem['rss_last_window_median_mb']:.0f} MB "
            f"in its last {RSS_WINDOW_S:.0f} s (growth {growth:+.2f}%; window peaks {peak_growth:+.2f}%); "
            f"peak {mem['rss_peak_mb']:.0f} MB, {memory.samples[-1][1] / 2**20:.0f} MB after the drain"
        )
    if cpu_s is not None:
        mem["server_cpu_s"] = cpu_s
        print(f"server CPU: {cpu_s:.0f} s, {cpu_s / max(rows['all']['audio_s'], 1e-9):.2f} CPU s per audio s")
    print(f"server: {health}")
    return {
        "rows": rows,
        "memory": mem,
        "wall_s": wall,
        "health": health,
        "failures": [asdict(r) for r in failures],
    }


def start_server(port: int, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("KOEL_VOICES_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "voices"))
    cmd = [
        sys.executable,
        "-m",
        "koel.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return subprocess.Popen([*cmd, *extra], env=env)


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the server did not become healthy")


async def main_async(args: argparse.Namespace, url: str, pid: int | None) -> dict:
    print(f"learning reference lengths of {len(SHORT) + len(LONG)} texts (and warming up)...", flush=True)
    exact = "--batch" not in args.server_args.split()
    refs = await references(url)
    memory, stop = Memory(), asyncio.Event()
    sampler = asyncio.create_task(sample_memory(pid, memory, stop)) if pid else None
    results: list[Result] = []
    print(f"load: {args.clients} clients for {args.duration:.0f} s...", flush=True)
    start, cpu = time.monotonic(), cpu_seconds(pid) if pid else None
    deadline = start + args.duration
    await asyncio.gather(
        *(client_loop(url, args.seed + i, deadline, refs, exact, results) for i in range(args.clients))
    )
    wall = time.monotonic() - start
    stop.set()
    if sampler:
        await sampler
    cpu_s = cpu_seconds(pid) - cpu if pid and cpu is not None else None
    health = httpx.get(url + "/health", timeout=10).json()
    return report(results, memory, wall, args.warmup, args.duration, health, cpu_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds during which requests are started"
    )
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of load before the RSS baseline")
    parser.add_argument("--url", help="an already running server (127.0.0.1 only); else one is started")
    parser.add_argument("--pid", type=int, help="pid of the server at --url, for RSS sampling")
    parser.add_argument("--port", type=int, default=8891)
    parser.add_argument("--server-args", default="", help="extra 'koel serve' arguments, e.g. '--batch'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    proc = None
    if args.url:
        if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("the load test only runs against loopback")
        url, pid = args.url.rstrip("/"), args.pid
    else:
        url = f"http://127.0.0.1:{args.port}"
        proc = start_server(args.port, args.server_args.split())
        pid = proc.pid
    try:
        wait_healthy(url, proc)
        summary = asyncio.run(main_async(args, url, pid))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    summary["args"] = vars(args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    ok = summary["rows"]["all"]["good"] == summary["rows"]["all"]["n"]
    growth = summary["memory"].get("growth_pct", 0.0)
    print("PASS" if ok and growth < 5 else "FAIL", f"(all good: {ok}, RSS growth {growth:+.2f}% < 5%)")
    return 0 if ok and growth < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
