"""Streaming latency, fairness between clients, graceful shutdown and the ``koel serve`` command line."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from koel.audio import decode
from koel.serve import ServerSettings, create_app


def _sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} is here." for i in range(n))


def _timed_stream(url: str, body: dict) -> tuple[float, float, bytes]:
    """(seconds to the first audio byte, seconds to the end, the bytes) of one streamed request."""
    start = time.monotonic()
    first = None
    data = b""
    with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200
        for part in r.iter_raw():
            if part and first is None:
                first = time.monotonic() - start
            data += part
    assert first is not None
    return first, time.monotonic() - start, data


def test_first_bytes_leave_after_the_first_chunk_not_the_whole_input(kit, live_server_factory):
    engine = kit.FakeEngine(delay=0.25)
    pipeline = kit.pipeline(engine)
    live = live_server_factory(create_app(pipeline))
    text = _sentences(6)
    first, total, data = _timed_stream(live.url, {"input": text, "response_format": "pcm"})
    assert total > 1.4  # six chunks at 0.25 s
    assert first < total / 3, f"first byte after {first:.2f} s of {total:.2f} s"
    assert len(decode(data, fmt="pcm")[0]) == len(pipeline.synthesize(text).audio)


def test_a_short_request_is_not_stuck_behind_a_long_stream(kit, live_server_factory):
    live = live_server_factory(create_app(kit.pipeline(kit.FakeEngine(delay=0.1))))
    timings: dict[str, float] = {}

    def long() -> None:
        timings["long"] = _timed_stream(live.url, {"input": _sentences(25), "response_format": "pcm"})[1]

    thread = threading.Thread(target=long)
    thread.start()
    time.sleep(0.4)
    start = time.monotonic()
    r = httpx.post(live.url + "/v1/audio/speech", json={"input": "Short.", "stream": False}, timeout=30)
    timings["short"] = time.monotonic() - start
    thread.join(60)
    assert r.status_code == 200
    assert timings["long"] > 2.4
    assert timings["short"] < timings["long"] / 3, timings


def test_graceful_shutdown_finishes_in_flight_streams(kit, live_server_factory):
    engine = kit.FakeEngine(delay=0.15)
    pipeline = kit.pipeline(engine)
    live = live_server_factory(create_app(pipeline), timeout_graceful_shutdown=20)
    text = _sentences(10)
    result: dict[str, object] = {}

    def stream() -> None:
        try:
            result["data"] = _timed_stream(live.url, {"input": text, "response_format": "wav"})[2]
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(0.5)  # the stream is under way
    live.server.should_exit = True
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):  # new connections are refused while it drains
        httpx.get(live.url + "/health", timeout=2)
    thread.join(30)
    live.thread.join(30)
    assert "error" not in result, result
    audio, _ = decode(result["data"])  # type: ignore[arg-type]
    assert len(audio) == len(pipeline.synthesize(text).audio)
    assert not live.thread.is_alive()


def test_shutdown_past_the_grace_period_ends_streams_cleanly(kit, live_server_factory):
    live = live_server_factory(
        create_app(kit.pipeline(kit.FakeEngine(delay=0.2))), timeout_graceful_shutdown=0.5
    )
    errors: list[Exception] = []

    def stream() -> None:
        try:
            _timed_stream(live.url, {"input": _sentences(40), "response_format": "pcm"})
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(0.5)
    start = time.monotonic()
    live.stop()
    thread.join(30)
    assert not live.thread.is_alive()
    assert time.monotonic() - start < 10
    # The stream is cut (no final chunk), not passed off as a whole response.
    assert len(errors) == 1 and isinstance(errors[0], httpx.RemoteProtocolError)


def test_koel_serve_command_line(monkeypatch):
    from koel.cli import build_parser
    from koel.serve.cli import settings_from_args

    monkeypatch.delenv("KOEL_API_KEY", raising=False)
    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "9001",
            "--batch",
            "--batch-window-ms",
            "4",
            "--cors",
            "*",
            "--max-input-chars",
            "100",
        ]
    )
    assert args.func.__name__ == "cmd_serve" and args.port == 9001 and args.host == "127.0.0.1"
    settings = settings_from_args(args)
    assert settings.batch.enabled and settings.batch.window_ms == 4
    assert settings.cors_origins == ("*",) and settings.max_input_chars == 100 and settings.api_key is None
    assert settings.trim_interval == 1.0 and args.tune_malloc and settings.stream_tiles
    tuned = build_parser().parse_args(
        [
            "serve",
            "--no-tune-malloc",
            "--trim-interval",
            "0",
            "--no-first-chunk-priority",
            "--no-stream-tiles",
        ]
    )
    assert not tuned.tune_malloc and settings_from_args(tuned).trim_interval is None
    assert not settings_from_args(tuned).first_chunk_priority and not settings_from_args(tuned).stream_tiles
    monkeypatch.setenv("KOEL_API_KEY", "from-env")
    assert settings_from_args(build_parser().parse_args(["serve"])).api_key == "from-env"


def test_settings_are_validated():
    with pytest.raises(ValueError, match="max_input_chars"):
        ServerSettings(max_input_chars=0)
    with pytest.raises(ValueError, match="api_key"):
        ServerSettings(api_key="  ")
