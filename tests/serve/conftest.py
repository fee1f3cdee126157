"""Server test fixtures: a fake engine and front end (fast, deterministic), voices, and a live server.

The fake engine returns a sine of ``600 * sum(durations)`` samples, with durations derived from the
token ids and the speed, so response lengths can be predicted exactly. The fake front end makes one
chunk per sentence and one word per whitespace-separated token, with real character offsets.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from koel.backends.base import EngineRequest, EngineResult
from koel.constants import FRAME_SAMPLES, SAMPLE_RATE, VOICE_DIM, VOICE_ROWS
from koel.pipeline import Pipeline, SynthesisOptions
from koel.tokenizer import VOCAB
from koel.types import PhonemeChunk, Word
from koel.voices import Voice, VoiceStore, save_voice

FAKE_VOICES = ("af_test", "am_test", "bf_test")


class FakeEngine:
    """Engine protocol stand-in: a sine per request; ``delay`` seconds of 'compute' per call."""

    name = "fake"

    def __init__(self, delay: float = 0.0, per_request_delay: float = 0.0) -> None:
        self.delay = delay
        self.per_request_delay = per_request_delay
        self.calls: list[int] = []
        self.seen: list[int] = []  # second token id of every request, in the order they ran
        self.fail_on: set[int] = set()  # token ids that make a request fail
        self.lock = threading.Lock()

    @staticmethod
    def durations(request: EngineRequest) -> np.ndarray:
        base = np.array([1 + (i % 3) for i in request.ids], dtype=np.float64)
        return np.maximum(1, np.round(base / request.speed)).astype(np.int64)

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        with self.lock:
            self.calls.append(len(requests))
            self.seen.extend(r.ids[1] for r in requests)
        time.sleep(self.delay + self.per_request_delay * len(requests))
        results = []
        for r in requests:
            if self.fail_on & set(r.ids):
                raise RuntimeError("fake engine failure")
            d = self.durations(r)
            t = np.arange(FRAME_SAMPLES * int(d.sum()), dtype=np.float32) / SAMPLE_RATE
            pitch = 220.0 + 40.0 * float(np.asarray(r.style).reshape(-1)[0])
            results.append(
                EngineResult(audio=(0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), durations=d)
            )
        return results


class FakeStreamingEngine(FakeEngine):
    """FakeEngine with koel's streaming interface (``stream`` and ``tile_prior``): a request's sine
    comes in pieces of ``first_frames`` frames, each next one ``growth`` times longer (or whole
    without ``first_frames``), ``piece_delay`` seconds apart. Records every call and its thread;
    ``fail_after`` pieces, the stream raises."""

    def __init__(self, piece_delay: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.piece_delay = piece_delay
        self.streams: list[dict] = []  # per stream call: its options, pieces made, thread name
        self.priors: list[str] = []  # thread name of every tile_prior call
        self.fail_after: int | None = None

    def tile_prior(self, request: EngineRequest) -> object:
        self.priors.append(threading.current_thread().name)
        return ("prior", request.ids)

    def stream(self, request: EngineRequest, *, first_frames=None, frames=None, growth=1.0, prior=None):
        [whole] = self.run([request])
        record = {
            "first_frames": first_frames,
            "prior": prior,
            "made": 0,
            "thread": threading.current_thread().name,
        }
        self.streams.append(record)

        def pieces() -> Iterator[np.ndarray]:
            at, size = 0, (first_frames or 1 << 30) * FRAME_SAMPLES
            while at < len(whole.audio):
                if self.fail_after is not None and record["made"] >= self.fail_after:
                    raise RuntimeError("fake stream failure")
                time.sleep(self.piece_delay)
                record["made"] += 1
                yield whole.audio[at : at + size]
                at, size = at + size, int(size * growth)

        return whole.durations, pieces()


class FakeFrontEnd:
    """One chunk per sentence; a word's 'phonemes' are its lower-case letters."""

    lang = "a"

    def chunks(self, text: str, raw_phonemes: bool = False) -> Iterator[PhonemeChunk]:
        for index, match in enumerate(re.finditer(r"[^.!?]+[.!?]*", text)):
            if not match.group().strip():
                continue
            words, phonemes = [], ""
            for w in re.finditer(r"\S+", match.group()):
                ph = "".join(c for c in w.group().lower() if c in VOCAB and c.isalpha()) or "ə"
                if phonemes:
                    phonemes += " "
                words.append(
                    Word(
                        w.group(),
                        ph,
                        len(phonemes),
                        len(phonemes) + len(ph),
                        match.start() + w.start(),
                        match.start() + w.end(),
                    )
                )
                phonemes += ph
            yield PhonemeChunk(text=match.group().strip(), phonemes=phonemes, words=tuple(words), index=index)

    def phonemize(self, text: str) -> str:
        return " ".join(c.phonemes for c in self.chunks(text))


def expected_samples(pipeline: Pipeline, text: str, speed: float = 1.0) -> int:
    """Exact length of what the fake engine and front end make for ``text`` (pauses included)."""
    return len(pipeline.synthesize(text, speed=speed).audio)


@pytest.fixture(scope="session")
def fake_voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("voices")
    gen = torch.Generator().manual_seed(0)
    for i, name in enumerate(FAKE_VOICES):
        pack = 0.1 * torch.randn(VOICE_ROWS, VOICE_DIM, generator=gen)
        pack[:, 0] = i  # the fake engine's pitch follows this value, so blends are audible in tests
        save_voice(Voice(name, pack), folder / f"{name}.pt")
    return folder


@pytest.fixture()
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture()
def fake_pipeline(fake_engine: FakeEngine, fake_voices: Path) -> Pipeline:
    store = VoiceStore(fake_voices, allow_download=False)
    return Pipeline(
        fake_engine, voice="af_test", voices=store, frontend=FakeFrontEnd(), options=SynthesisOptions()
    )


class LiveServer:
    """The app on uvicorn in a background thread, on a free loopback port."""

    def __init__(self, app, **config) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "timeout_graceful_shutdown": 10, "lifespan": "on"} | config
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.sock.close()


@pytest.fixture()
def live_server_factory():
    """``live_server_factory(app)`` -> a started LiveServer, stopped after the test."""
    servers: list[LiveServer] = []

    def start(app, **config) -> LiveServer:
        server = LiveServer(app, **config).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


class Kit:
    """The fakes and helpers, for tests and module-scoped fixtures that build their own server."""

    FakeEngine = FakeEngine
    FakeStreamingEngine = FakeStreamingEngine
    FakeFrontEnd = FakeFrontEnd
    LiveServer = LiveServer

    def __init__(self, voices: Path) -> None:
        self.voices = voices

    def pipeline(self, engine: FakeEngine | None = None) -> Pipeline:
        store = VoiceStore(self.voices, allow_download=False)
        return Pipeline(engine or FakeEngine(), voice="af_test", voices=store, frontend=FakeFrontEnd())


@pytest.fixture(scope="session")
def kit(fake_voices: Path) -> Kit:
    return Kit(fake_voices)
