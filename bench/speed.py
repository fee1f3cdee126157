"""Speed of koel's engines against the official int8 export (kokoro-onnx), with the quality check.

    python bench/speed.py [--threads 2] [--engines fast,onnx] [--sections rtf,quality,ttfa,serve,memory,batch,profile]

* rtf      30 sentences, same phonemes and voice, the engines called in alternating order on each
           sentence (interleaved), wall and CPU time; ratio koel / export (goal: <= 0.5)
* quality  WER (Whisper base) and DNSMOS (speechmos) of that same audio (bars: WER <= export + 1
           point, DNSMOS >= export - 0.05), and of the same sentences with the generator in growing
           time tiles as Pipeline.pieces makes them (first tile --first-frames, each next
           koel.pipeline.TILE_GROWTH times longer, statistics started from the voice's tile prior;
           and without a prior, as pieces falls back to), with log-mel correlation to the untiled audio
* ttfa     time to first audio of a 200-word paragraph, text in -> first audio out through the
           library: Pipeline.stream (first chunk whole) and Pipeline.pieces (what `koel say --stream`
           uses: first chunk's generator in growing tiles), for first-chunk limits 100 (default), 50;
           for pieces also the stalls: how long a player starting on the first piece would wait
           for later ones over the whole paragraph (goal: 0)
* serve    the same paragraph from `koel serve` (POST /v1/audio/speech, streamed, pcm and mp3) over
           loopback: time to the first audio byte and stalls, with the first chunk streamed in time
           tiles (the default) and whole (--no-stream-tiles), two servers asked in alternation; then
           throughput under load: 4 clients streaming short sentences back to back, each server in
           turn (requests per second, first byte median and p90)
* memory   peak RSS (VmHWM, each process on its own) of `koel say` (one sentence) with the default
           and the reference engine, and RSS of `koel serve` at rest
* batch    sentences per second for a 100-sentence job: one call per sentence vs padded batches
* profile  top operators (torch.profiler) of the reference model and of the default engine, and
           what each fast-path change buys (ablation)

Needs ../shared/voices and the bench extras (pip install -e ".[bench]"). Prints tables only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import httpx

# Every system runs with the process's own threading settings, as a user would run it: OpenMP's
# wait policy is left to the environment (the tables name it). With OMP_WAIT_POLICY=PASSIVE, threads
# that sleep at each barrier made koel 20-25% slower on 2 quiet cores (0.27-0.31 vs 0.20-0.24 s per
# audio second over these 30 sentences, 3 alternating rounds), mostly in the LSTMs' many small steps.
# The export runs twice, with ORT's thread spinning on (its default) and off, and koel is compared
# with the faster of the two.
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
SHARED = BENCH.parents[1] / "shared"
SR = 24_000

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint faded by a century of salt and wind. "
    "Every evening, the keeper climbed the narrow stairs, counted the steps out of habit, and lit the great lamp "
    "that swept its beam across the dark water. Ships passing in the night would see the light and know exactly "
    "where the rocks were hidden beneath the waves. In winter, storms arrived without warning, and the keeper "
    "would stay awake until dawn, listening to the thunder and watching the sea rise against the stones. Sometimes "
    "a fishing boat would limp into the small harbor below, its crew exhausted and grateful, and the keeper would "
    "walk down with blankets and a pot of hot soup. The villagers said that no one had ever been lost on that "
    "stretch of coast while the lamp was burning. When the keeper finally retired, an automatic light replaced "
    "him, and the tower fell silent. Children still climb the hill on summer afternoons to look at the rusty door "
    "and imagine the long nights, the roaring wind, and the single steady light that kept so many sailors safe."
)


def _setup(threads: int) -> None:
    if not (SHARED / "voices").is_dir():
        raise SystemExit(f"needs the official voice packs in {SHARED / 'voices'}")
    os.environ.setdefault("KOEL_VOICES_DIR", str(SHARED / "voices"))
    import torch

    torch.set_num_threads(threads)


def _sentences(n: int) -> list[str]:
    from model_quality import SENTENCES

    extra = [
        line.split("|")[1]
        for line in (SHARED / "datasets/ljspeech-mini/metadata.csv").read_text().splitlines()
    ]
    extra += (BENCH / "sentences_numbers.txt").read_text().splitlines()
    pool = [s.strip() for s in [*SENTENCES, *extra] if s.strip()]
    return (pool * (n // len(pool) + 1))[:n]


class Systems:
    """The official export and koel's engines, each a callable (ids, style row) -> audio."""

    def __init__(self, engines: list[str], threads: int) -> None:
        from koel.paths import cache_dir
        from koel.reference import OfficialOnnxReference
        from koel.weights.onnx_import import official_onnx_path

        path = official_onnx_path(cache_dir())
        self.reference = OfficialOnnxReference(path, threads=threads)
        self.quiet_reference = _NoSpinReference(path, threads=threads)
        self.engines = {name: self._engine(name, threads) for name in engines}

    @staticmethod
    def _engine(name: str, threads: int) -> object:
        """An engine by name; ``fast-float-bert`` is ``fast`` with PL-BERT's products in float32."""
        from koel.backends.auto import FastTorchEngine, default_engine, tune_cpu_process
        from koel.weights.loading import load_model

        if name == "fast-float-bert":
            tune_cpu_process(threads)
            return FastTorchEngine(load_model(), int8_text=False)
        return default_engine(name, threads=threads)

    def run(self, name: str, ids: list[int], style: np.ndarray) -> np.ndarray:
        from koel.backends.base import EngineRequest

        if name == "export":
            return self.reference.synthesize(ids, style)
        if name == "export-ns":
            return self.quiet_reference.synthesize(ids, style)
        return self.engines[name].run([EngineRequest(tuple(ids), style.reshape(-1), 1.0)])[0].audio

    @property
    def names(self) -> list[str]:
        return ["export", "export-ns", *self.engines]


def _no_spin_reference_class() -> type:
    from koel.reference import OfficialOnnxReference

    class NoSpin(OfficialOnnxReference):
        """The official export with ORT's thread spinning off (the setting that suits a busy machine)."""

        def _session_options(self):  # type: ignore[no-untyped-def]
            options = super()._session_options()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return options

    return NoSpin


def _NoSpinReference(path: Path, threads: int):
    return _no_spin_reference_class()(path, threads=threads)


def _inputs(sentences: list[str], voice: str = "af_heart") -> list[tuple[list[int], np.ndarray]]:
    from koel.text import FrontEnd
    from koel.tokenizer import encode, with_boundaries
    from koel.voices import VoiceStore

    front, pack = FrontEnd("a"), VoiceStore().get(voice)
    out = []
    for s in sentences:
        ps = front.phonemize(s)
        out.append((with_boundaries(encode(ps)), pack.row(len(ps)).reshape(-1).numpy()))
    return out


# -- sections ---------------------------------------------------------------------------------------


def section_rtf(systems: Systems, inputs: list, rounds: int) -> dict[str, list[np.ndarray]]:
    names = systems.names
    for name in names:  # warm-up: first calls allocate arenas and pick kernels
        systems.run(name, *inputs[0])
    wall = {n: 0.0 for n in names}
    cpu = {n: 0.0 for n in names}
    audio: dict[str, list[np.ndarray]] = {n: [] for n in names}
    seconds = 0.0
    for r in range(rounds):
        for i, (ids, style) in enumerate(inputs):
            order = names if (i + r) % 2 == 0 else names[::-1]  # alternate who goes first
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                out = systems.run(name, ids, style)
                wall[name] += time.perf_counter() - t0
                cpu[name] += time.process_time() - c0
                if r == 0:
                    audio[name].append(out)
            seconds += len(audio["export"][i]) / SR if r == 0 else 0.0
    seconds *= rounds
    print(
        f"\n## Real-time factor: {len(inputs)} sentences x {rounds} round(s), {seconds:.1f} s of audio per system"
    )
    print(
        f"{'system':10s} {'wall s':>8s} {'RTF':>7s} {'CPU s':>8s} {'CPU/audio':>9s} {'wall vs export':>15s}"
    )
    for name in names:
        ratio = wall[name] / wall["export"]
        print(
            f"{name:10s} {wall[name]:8.2f} {wall[name] / seconds:7.3f} {cpu[name]:8.2f} {cpu[name] / seconds:9.3f} {ratio:15.2f}"
        )
    best = min(wall["export"], wall["export-ns"])
    for name in systems.engines:
        verdict = "meets" if wall[name] <= 0.5 * best else "misses"
        print(
            f"koel {name}: {wall[name] / best:.2f}x the faster export configuration's time ({verdict} the <= 0.5 goal)"
        )
    audio.pop("export-ns")
    return audio


def section_quality(
    sentences: list[str], audio: dict[str, list[np.ndarray]], tiled: dict[str, tuple[str, list[np.ndarray]]]
) -> None:
    """WER and DNSMOS of every engine's audio; ``tiled`` maps a label to (engine, its tiled audio),
    compared also with that engine's untiled audio."""
    from model_quality import dnsmos
    from whisper_util import load_whisper, normalized_wer, transcribe

    whisper = load_whisper()
    print(f"\n## Quality of the same audio: Whisper base WER, DNSMOS overall ({len(sentences)} sentences)")
    print(f"{'system':20s} {'WER %':>7s} {'DNSMOS':>7s}")
    scores = {}
    for name, clips in audio.items():
        wer = 100 * normalized_wer(sentences, [transcribe(whisper, a).text for a in clips])
        mos = float(np.mean([dnsmos(a) for a in clips]))
        scores[name] = (wer, mos)
        print(f"{name:20s} {wer:7.2f} {mos:7.3f}")
    for label, (name, clips) in tiled.items():
        wer = 100 * normalized_wer(sentences, [transcribe(whisper, a).text for a in clips])
        mos = float(np.mean([dnsmos(a) for a in clips]))
        scores[label] = (wer, mos)
        corr = [log_mel_correlation(u, t) for u, t in zip(audio[name], clips, strict=True)]
        print(
            f"{label:20s} {wer:7.2f} {mos:7.3f}   log-mel correlation with untiled: "
            f"mean {np.mean(corr):.4f}, min {np.min(corr):.4f}"
        )
    ew, em = scores["export"]
    for name, (w, m) in scores.items():
        if name != "export":
            ok = w <= ew + 1 and m >= em - 0.05
            print(
                f"koel {name}: WER {w - ew:+.2f} points, DNSMOS {m - em:+.3f} ({'within' if ok else 'outside'} the bars)"
            )


def playback_stalls(arrivals: list[float], durations: list[float]) -> float:
    """Seconds a player that starts on the first piece would wait for later ones: piece k arrives at
    ``arrivals[k]`` (from the same clock) and plays for ``durations[k]``."""
    stalls, end = 0.0, arrivals[0]
    for arrival, duration in zip(arrivals, durations, strict=True):
        stalls += max(0.0, arrival - end)
        end = max(end, arrival) + duration
    return stalls


def section_ttfa(systems: Systems, limits: list[int], first_frames: int, repeats: int = 5) -> None:
    """Text in -> first audio out through the library: ``Pipeline.stream`` (first chunk whole) and
    ``Pipeline.pieces`` (first chunk's generator in growing time tiles), front end included. For
    ``pieces``, also how long a player starting on the first piece would then wait for later ones over
    the whole paragraph (0: every piece is ready before the one before it has played)."""
    from koel.pipeline import Pipeline, SynthesisOptions

    print(
        f"\n## Time to first audio: {len(PARAGRAPH.split())}-word paragraph, text in -> first audio out "
        f"(front end included; pieces: first tile {first_frames / 80:.2f} s), "
        f"median of {repeats}; stalls: worst run"
    )
    print(
        f"{'engine':8s} {'first chunk <=':>14s} {'path':>7s} {'audio s':>8s} {'TTFA s':>7s} {'stalls s':>8s}"
        "  first chunk"
    )
    for name, engine in systems.engines.items():
        for limit in limits:
            pipe = Pipeline(
                engine, voice="af_heart", lang="a", options=SynthesisOptions(first_chunk_phonemes=limit)
            )
            pipe.synthesize("Warm up the front end and the engine.")
            t0 = time.perf_counter()
            if pipe.tile_prior() is not None:  # once per voice (then read from koel's cache)
                print(
                    f"{name:8s} tile prior of af_heart: {time.perf_counter() - t0:.3f} s (made once per voice, then cached)"
                )
            for path in ("stream", "pieces"):
                times, stalls, seconds, text = [], [], 0.0, ""
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    if path == "stream":
                        first = next(iter(pipe.stream(PARAGRAPH)))
                        times.append(time.perf_counter() - t0)
                        seconds, text = len(first.audio) / SR, first.text
                        continue
                    arrivals, durations, chunk = [], [], None
                    for piece in pipe.pieces(PARAGRAPH, first_tile_frames=first_frames):
                        if len(piece.audio):
                            arrivals.append(time.perf_counter() - t0)
                            durations.append(len(piece.audio) / SR)
                        chunk = chunk or piece.chunk
                    times.append(arrivals[0])
                    stalls.append(playback_stalls(arrivals, durations))
                    seconds, text = durations[0], chunk.text if chunk else ""
                stall = f"{max(stalls):8.3f}" if stalls else f"{'':8s}"
                print(
                    f"{name:8s} {limit:14d} {path:>7s} {seconds:8.2f} {statistics.median(times):7.3f} {stall}"
                    f"  {text[:50]!r}"
                )


def tiled_audio(
    engine: object, inputs: list, first_frames: int, growth: float, prior: object = None
) -> list[np.ndarray]:
    """Each input streamed as ``Pipeline.pieces`` streams a first chunk: growing tiles from
    ``first_frames``, the tiles' statistics started from ``prior`` (or from nothing)."""
    from koel.backends.base import EngineRequest

    out = []
    for ids, style in inputs:
        request = EngineRequest(tuple(ids), style, 1.0)
        _, pieces = engine.stream(request, first_frames=first_frames, growth=growth, prior=prior)  # type: ignore[attr-defined]
        out.append(np.concatenate(list(pieces)))
    return out


def log_mel_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of 80-band log-mel spectrograms (1024/256) over the common length."""
    import librosa

    n = min(len(a), len(b))
    mels = [
        np.log(librosa.feature.melspectrogram(y=x[:n], sr=SR, n_fft=1024, hop_length=256, n_mels=80) + 1e-6)
        for x in (a, b)
    ]
    return float(np.corrcoef(mels[0].ravel(), mels[1].ravel())[0, 1])


def _peak_rss_mb(cmd: list[str], env: dict[str, str]) -> float:
    """Peak RSS (VmHWM) of ``cmd`` on its own: polled from /proc while it runs.

    VmHWM belongs to the process's own address space (new at exec), unlike ru_maxrss, which Linux
    carries over from the parent across fork and exec (so it would report this large process).
    """
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status, peak_kib = Path(f"/proc/{proc.pid}/status"), 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        except (OSError, ValueError):  # exiting
            pass
        time.sleep(0.02)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed with status {proc.returncode}: {err}")
    return peak_kib / 1024


def _start_server(env: dict[str, str], port: int, *extra: str) -> subprocess.Popen:
    """`koel serve` on loopback ``port`` (warm-up included), returned once /health answers."""
    import urllib.request

    cmd = [
        sys.executable,
        "-m",
        "koel.cli",
        "serve",
        "--port",
        str(port),
        "--no-web",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen([*cmd, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"koel serve {' '.join(extra)} exited with status {proc.returncode}"
                ) from None
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the server did not come up in 5 minutes")


def _server_rest_rss_mb(env: dict[str, str], port: int = 8931) -> float:
    proc = _start_server(env, port)
    try:
        time.sleep(5)  # at rest
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
    finally:
        proc.terminate()
        proc.wait(30)


def _streamed_speech(client: httpx.Client, url: str, text: str, fmt: str) -> tuple[float, float, float]:
    """(first audio byte s, stalls s, whole response s) of one streamed /v1/audio/speech request
    sent with ``client`` (an ``httpx.Client``, made before the clock starts: making one costs
    30-70 ms, most of it an SSL context, which no server should be charged for).
    Stalls (pcm only: 16-bit samples, so each read's duration is known) as :func:`playback_stalls`."""
    arrivals, durations = [], []
    body = {"input": text, "voice": "af_heart", "response_format": fmt, "stream": True}
    started = time.perf_counter()
    with client.stream("POST", f"{url}/v1/audio/speech", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url} answered {r.status_code}: {r.read()[:200]!r}")
        for data in r.iter_raw():
            if data:
                arrivals.append(time.perf_counter() - started)
                durations.append(len(data) / 2 / SR)
    whole = time.perf_counter() - started
    stalls = playback_stalls(arrivals, durations) if fmt == "pcm" else float("nan")
    return arrivals[0], stalls, whole


SERVE_LOAD_TEXTS = (
    "Hello, and welcome to the koel speech server.",
    "The quick brown fox jumps over the lazy dog.",
    "Can you hear me clearly right now?",
    "Please remember to water the plants on Tuesday.",
)


def _serve_load(url: str, clients: int, seconds: float) -> list[tuple[float, float]]:
    """``clients`` concurrent clients (threads, one connection each) streaming short sentences back
    to back for ``seconds``: (first audio byte s, whole response s) of every request that finished."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    stop = time.perf_counter() + seconds

    def client(i: int) -> list[tuple[float, float]]:
        out = []
        with httpx.Client(timeout=300) as c:
            while time.perf_counter() < stop:
                first, _, whole = _streamed_speech(
                    c, url, SERVE_LOAD_TEXTS[(i + len(out)) % len(SERVE_LOAD_TEXTS)], "pcm"
                )
                out.append((first, whole))
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [row for rows in pool.map(client, range(clients)) for row in rows]


def section_serve(threads: int, repeats: int = 5, clients: int = 4, load_seconds: float = 30.0) -> None:
    """First audio from `koel serve`: the paragraph streamed over loopback, first chunk in time tiles
    (default) and whole (--no-stream-tiles), the two servers asked in alternation; then throughput
    under load (``clients`` clients streaming short sentences back to back, each server in turn, two
    rounds), where the tiled server makes chunks whole whenever others wait."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    servers = {"tiles": (8941, ()), "whole chunks": (8942, ("--no-stream-tiles",))}
    procs = []
    try:
        for port, extra in servers.values():  # one at a time: each warms up (and makes its prior) alone
            procs.append(_start_server(env, port, *extra))
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for r in range(repeats):
            for fmt in ("pcm", "mp3"):
                order = list(servers) if r % 2 == 0 else list(servers)[::-1]
                for name in order:
                    url = f"http://127.0.0.1:{servers[name][0]}"
                    with httpx.Client(timeout=300) as client:  # a new connection, as a new client makes
                        results.setdefault((name, fmt), []).append(
                            _streamed_speech(client, url, PARAGRAPH, fmt)
                        )
        load: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        seconds = dict.fromkeys(servers, 0.0)
        for r in range(2):
            for name in list(servers) if r == 0 else list(servers)[::-1]:
                load[name] += _serve_load(f"http://127.0.0.1:{servers[name][0]}", clients, load_seconds)
                seconds[name] += load_seconds
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    print(
        f"\n## koel serve: {len(PARAGRAPH.split())}-word paragraph, POST /v1/audio/speech streamed over "
        f"loopback, median of {repeats} (alternating servers); stalls: worst run"
    )
    print(f"{'first chunk':14s} {'format':>6s} {'first byte s':>12s} {'stalls s':>8s} {'whole s':>8s}")
    for (name, fmt), rows in results.items():
        first, stalls, whole = zip(*rows, strict=True)
        stall = f"{max(stalls):8.3f}" if fmt == "pcm" else f"{'':8s}"
        print(
            f"{name:14s} {fmt:>6s} {statistics.median(first):12.3f} {stall} {statistics.median(whole):8.2f}"
        )
    print(
        f"\nUnder load: {clients} clients streaming short sentences back to back, "
        f"2 x {load_seconds:.0f} s per server (servers in turn)"
    )
    print(f"{'first chunk':14s} {'requests':>8s} {'per s':>6s} {'first byte s: median':>21s} {'p90':>6s}")
    for name, rows in load.items():
        firsts = sorted(f for f, _ in rows)
        median = statistics.median(firsts) if firsts else float("nan")
        p90 = firsts[int(0.9 * (len(firsts) - 1))] if firsts else float("nan")
        print(f"{name:14s} {len(rows):8d} {len(rows) / seconds[name]:6.2f} {median:21.3f} {p90:6.3f}")


def section_memory(threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        wav = str(Path(tmp) / "x.wav")
        say = [
            sys.executable,
            "-m",
            "koel.cli",
            "say",
            "The quick brown fox jumps over the lazy dog.",
            "-o",
            wav,
        ]
        rows = [
            ("koel say, one sentence (default engine)", _peak_rss_mb(say, env)),
            ("koel say --engine torch (reference)", _peak_rss_mb([*say, "--engine", "torch"], env)),
            ("koel serve, at rest after warm-up", _server_rest_rss_mb(env)),
        ]
    print("\n## Memory: peak RSS (resident set)")
    for label, mb in rows:
        print(f"{label:46s} {mb:8.0f} MB")


def section_batch(systems: Systems, n: int, batch: int) -> None:
    from koel.backends.base import EngineRequest

    requests = [EngineRequest(tuple(ids), style, 1.0) for ids, style in _inputs(_sentences(n))]
    print(f"\n## Throughput: {n}-sentence job (padded batches of up to {batch}, similar lengths together)")
    print(f"{'engine':8s} {'one at a time':>14s} {'batched':>9s} {'gain':>6s}  (sentences/s)")
    for name, engine in systems.engines.items():
        if not hasattr(engine, "max_batch"):
            continue
        engine.max_batch = batch
        t0 = time.perf_counter()
        for r in requests:
            engine.run([r])
        single = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.run(requests)
        batched = n / (time.perf_counter() - t0)
        print(f"{name:8s} {single:14.2f} {batched:9.2f} {batched / single:6.2f}")


def _top_ops(fn, k: int = 8) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [(e.key, 100 * e.self_cpu_time_total / total) for e in events[:k]]


def section_profile(inputs: list, threads: int) -> None:
    import copy

    import torch

    from koel.model.fast import accelerate, set_concurrent_branches
    from koel.weights.loading import load_model

    ids, style = max(inputs, key=lambda x: len(x[0]))
    x, s = torch.tensor([ids]), torch.from_numpy(style)[None]
    reference = load_model()
    variants: list[tuple[str, object, bool]] = [("reference eager fp32", reference, False)]
    for label, precision, dft, concurrent in (
        ("+ fused AdaIN/Snake (fp32)", "fp32", False, False),
        ("+ block-DFT long kernels (polyphase)", "fp32", True, False),
        ("+ bf16 convolutions, compiled kernel", "bf16", True, False),
        ("+ concurrent generator branches", "bf16", True, True),
    ):
        if precision == "bf16" and accelerate(copy.deepcopy(reference), "auto") != torch.bfloat16:
            continue  # no native bf16 on this CPU
        model = copy.deepcopy(reference)
        accelerate(model, precision, block_dft=dft)
        variants.append((label, model, concurrent))
    print(f"\n## Profile: one {len(ids) - 2}-phoneme sentence, {threads} thread(s)")
    default = set_concurrent_branches(False)  # so the profiler sees every op on this thread
    for label, model, _ in (variants[0], variants[-1]):
        print(f"top operators, {label.lstrip('+ ')} path (share of self CPU time):")
        for key, share in _top_ops(lambda m=model: m.synthesize(x, s)):
            print(f"  {key:32s} {share:5.1f}%")
    seconds = 600 * int(reference.synthesize(x, s).durations.sum()) / SR
    times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    for _ in range(3):  # interleaved rounds, median
        for label, model, concurrent in variants:
            set_concurrent_branches(concurrent)
            t0 = time.perf_counter()
            model.synthesize(x, s)  # type: ignore[attr-defined]
            times[label].append(time.perf_counter() - t0)
    set_concurrent_branches(default)
    print("what each change buys (cumulative; wall time per audio second, median of 3 interleaved rounds):")
    base = statistics.median(times[variants[0][0]])
    for label, _, _ in variants:
        t = statistics.median(times[label])
        print(f"  {label:40s} {t / seconds:7.3f} s/s  {base / t:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="timing rounds over the sentences")
    parser.add_argument("--engines", default="fast", help="koel engines to compare (fast, onnx, torch)")
    parser.add_argument("--sections", default="rtf,quality,ttfa,serve,memory,batch,profile")
    parser.add_argument("--ttfa-limits", default="100,50", help="first-chunk phoneme limits")
    parser.add_argument(
        "--first-frames",
        type=int,
        default=None,
        help="first generator tile in 80 Hz frames (default: koel.pipeline.FIRST_TILE_FRAMES, what "
        "Pipeline.pieces uses)",
    )
    parser.add_argument("--batch-sentences", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if args.first_frames is None:
        from koel.pipeline import FIRST_TILE_FRAMES

        args.first_frames = FIRST_TILE_FRAMES
    _setup(args.threads)
    sections = set(args.sections.split(","))
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY") or "libgomp default"
    print(
        f"koel speed bench: {args.threads} thread(s), OMP_WAIT_POLICY {policy}, torch {torch.__version__}, "
        f"CPU {_cpu_name()}"
    )
    systems = Systems(args.engines.split(","), args.threads)
    sentences = _sentences(args.sentences)
    inputs = _inputs(sentences)
    if "rtf" in sections or "quality" in sections:
        audio = section_rtf(systems, inputs, args.rounds)
        if "quality" in sections:
            from koel.pipeline import TILE_GROWTH, UNPRIMED_FIRST_TILE_FRAMES, UNPRIMED_TILE_GROWTH, Pipeline

            tiled = {}
            for name, engine in systems.engines.items():
                if hasattr(engine, "stream"):  # as Pipeline.pieces runs a first chunk: with the voice's prior
                    prior = Pipeline(engine, voice="af_heart", lang="a").tile_prior()
                    primed = tiled_audio(engine, inputs, args.first_frames, TILE_GROWTH, prior)
                    tiled[f"{name}-tiled"] = (name, primed)
                    unprimed = tiled_audio(engine, inputs, UNPRIMED_FIRST_TILE_FRAMES, UNPRIMED_TILE_GROWTH)
                    tiled[f"{name}-tiled-no-prior"] = (name, unprimed)
            section_quality(sentences, audio, tiled)
    if "ttfa" in sections:
        section_ttfa(systems, [int(v) for v in args.ttfa_limits.split(",")], args.first_frames)
    if "serve" in sections:
        section_serve(args.threads)
    if "batch" in sections:
        section_batch(systems, args.batch_sentences, args.batch_size)
    if "profile" in sections:
        section_profile(inputs, args.threads)
    if "memory" in sections:
        section_memory(args.threads)


def _cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown"
    )
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f" {f}" in flags]
    return f"{name} ({os.cpu_count()} CPUs; {' '.join(extras)})"


if __name__ == "__main__":
    main()
