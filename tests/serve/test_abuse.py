"""Abuse: malformed and hostile requests get the right 4xx, slow and vanishing clients are handled,
and a well-behaved client is served correctly the whole time. Runs a real uvicorn on loopback."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from koel.audio import decode
from koel.serve import ServerSettings, create_app

MAX_CHARS = 500
MAX_BODY = 8192
GOOD = {"input": "Good morning. All is well.", "response_format": "wav", "voice": "af_test"}


def _sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} is here." for i in range(n))


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0, pause: float | None = None) -> bytes:
    """Send raw bytes (optionally stop for ``pause`` s with the connection open); read the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if pause:
            time.sleep(pause)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and not pause:
                    head, _, body = reply.partition(b"\r\n\r\n")
                    length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if length and len(body) >= int(length[0].split(b":")[1]):
                        break
        except (TimeoutError, ConnectionResetError):
            pass
        return reply


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:80]
    return int(reply.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def server(kit):
    engine = kit.FakeEngine(delay=0.01)
    settings = ServerSettings(
        max_input_chars=MAX_CHARS,
        max_body_bytes=MAX_BODY,
        body_timeout=1.0,
        send_timeout=1.0,
        request_timeout=20,
    )
    with kit.LiveServer(create_app(kit.pipeline(engine), settings)) as live:
        live.engine = engine
        yield live


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@contextmanager
def steady_client(url: str):
    """A client asking for speech in a loop meanwhile (at least twice); every answer must be 200 and complete."""
    stop = threading.Event()
    outcomes: list[str] = []

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set() or len(outcomes) < 2:
                try:
                    r = client.post("/v1/audio/speech", json=GOOD)
                    audio, _ = decode(r.content)
                    outcomes.append(
                        "ok" if r.status_code == 200 and len(audio) > 12000 else f"bad {r.status_code}"
                    )
                except Exception as exc:
                    outcomes.append(f"error {exc!r}")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        thread.join(30)
    assert set(outcomes) == {"ok"}, outcomes


def _error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    assert body["error"]["message"]
    return body["error"]


JSON = {"Content-Type": "application/json"}
BAD_BODIES = [
    pytest.param(b"{bad json", 400, id="malformed-json"),
    pytest.param(b"[1, 2, 3]", 400, id="json-array"),
    pytest.param(b'"just a string"', 400, id="json-string"),
    pytest.param(b"", 400, id="empty-body"),
    pytest.param(os.urandom(2048), 400, id="binary-garbage"),
    pytest.param(b"\xff\xfe" + "{}".encode("utf-16-le"), 400, id="utf16"),
    pytest.param(b"[" * 3000 + b"]" * 3000, 400, id="deep-nesting"),
    pytest.param(b'{"input": 5}', 400, id="input-int"),
    pytest.param(b'{"input": ["a"]}', 400, id="input-list"),
    pytest.param(b'{"input": null}', 400, id="input-null"),
    pytest.param(b"{}", 400, id="input-missing"),
    pytest.param(b'{"input": "   "}', 400, id="input-blank"),
    pytest.param(b'{"input": "hi", "speed": "fast"}', 400, id="speed-string"),
    pytest.param(b'{"input": "hi", "speed": 10}', 400, id="speed-too-high"),
    pytest.param(b'{"input": "hi", "speed": NaN}', 400, id="speed-nan"),
    pytest.param(b'{"input": "hi", "speed": true}', 400, id="speed-bool"),
    pytest.param(b'{"input": "hi", "stream": "yes"}', 400, id="stream-string"),
    pytest.param(b'{"input": "hi", "voice": 7}', 400, id="voice-int"),
    pytest.param(b'{"input": "hi", "voice": {"name": "x"}}', 400, id="voice-object-without-id"),
    pytest.param(b'{"input": "hi", "response_format": "mp4"}', 400, id="unknown-format"),
    pytest.param(b'{"input": "hi", "response_format": "../wav"}', 400, id="format-traversal"),
    pytest.param(b'{"input": "hi", "stream_format": "ws"}', 400, id="unknown-stream-format"),
    pytest.param(b'{"input": "hi", "lang": "klingon"}', 400, id="unknown-language"),
    pytest.param(b'{"input": "hi", "volume_multiplier": -1}', 400, id="negative-volume"),
    pytest.param(b'{"input": "hi", "model": "gpt-5"}', 404, id="unknown-model"),
]


@pytest.mark.parametrize(("body", "status"), BAD_BODIES)
def test_bad_bodies_get_openai_shaped_errors(http, body, status):
    r = http.post("/v1/audio/speech", content=body, headers=JSON)
    assert r.status_code == status, r.text
    _error(r)


HOSTILE_VOICES = [
    "zz_nobody",
    "../af_test",
    "..",
    "af_test/../../etc/passwd",
    "/etc/passwd",
    "%2e%2e%2faf_test",
    "..\\..\\windows",
    "af_test\x00.pt",
    "af_test:0.5+../am_test:0.5",
    "af_test:abc",
    "af_test:-1",
    "af_test(0)",
    "x" * 300,
]


@pytest.mark.parametrize("voice", HOSTILE_VOICES)
def test_unknown_and_hostile_voice_names_are_rejected(http, voice):
    r = http.post("/v1/audio/speech", json={"input": "hi", "voice": voice})
    assert r.status_code == 400, r.text
    assert _error(r)["param"] == "voice"


def test_a_client_is_served_throughout_a_barrage_of_bad_requests(server, http):
    with steady_client(server.url) as outcomes:
        for _ in range(3):
            for param in BAD_BODIES:
                body, status = param.values
                assert http.post("/v1/audio/speech", content=body, headers=JSON).status_code == status
            for voice in HOSTILE_VOICES:
                assert http.post("/v1/audio/speech", json={"input": "hi", "voice": voice}).status_code == 400
    assert len(outcomes) >= 2


def test_input_length_limit(http):
    ok = http.post("/v1/audio/speech", json={"input": "a" * MAX_CHARS, "response_format": "pcm"})
    assert ok.status_code == 200
    r = http.post("/v1/audio/speech", json={"input": "a" * (MAX_CHARS + 1)})
    assert r.status_code == 400
    assert _error(r)["code"] == "string_above_max_length"


def test_body_size_limits(server):
    big = json.dumps({"input": "a" * (MAX_BODY * 2)}).encode()
    declared = b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    reply = raw_exchange(server.port, declared + b"Content-Length: %d\r\n\r\n" % len(big) + big)
    assert status_of(reply) == 413
    chunked = declared + b"Transfer-Encoding: chunked\r\n\r\n"
    for start in range(0, len(big), 4096):
        part = big[start : start + 4096]
        chunked += b"%x\r\n" % len(part) + part + b"\r\n"
    assert status_of(raw_exchange(server.port, chunked + b"0\r\n\r\n")) == 413
    bad_length = declared + b"Content-Length: lots\r\n\r\n{}"
    assert status_of(raw_exchange(server.port, bad_length)) == 400


def test_wrong_methods_and_paths(http):
    assert _error(http.get("/v1/audio/speech")) and http.get("/v1/audio/speech").status_code == 405
    assert http.get("/v1/nothing/here").status_code == 404
    assert http.get("/../../etc/passwd").status_code == 404
    assert http.get("/static/%2e%2e/%2e%2e/settings.py").status_code == 404


def test_slow_body_gets_408_and_others_are_served_meanwhile(server):
    head = b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    with steady_client(server.url):
        start = time.monotonic()
        reply = raw_exchange(server.port, head + b'{"input": "he', timeout=10)
        assert status_of(reply) == 408
        assert time.monotonic() - start < 5
        # A connection that never finishes its headers must not block anyone either.
        with socket.create_connection(("127.0.0.1", server.port)) as lingering:
            lingering.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            time.sleep(1.0)


def test_garbage_connections_do_not_disturb_others(server):
    with steady_client(server.url):
        for _ in range(20):
            raw_exchange(server.port, os.urandom(512), timeout=2)
            raw_exchange(
                server.port,
                b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
                timeout=2,
            )


def test_disconnect_mid_stream_stops_the_work(kit, live_server_factory):
    from koel.tokenizer import encode

    engine = kit.FakeEngine(delay=0.05)
    live = live_server_factory(create_app(kit.pipeline(engine)))
    text = _sentences(60)  # every chunk starts with 's' ("sentence"); the steady client's with 'g'
    leaver = encode("s")[0]

    def leavers_chunks() -> int:
        with engine.lock:
            return engine.seen.count(leaver)

    with steady_client(live.url):
        with socket.create_connection(("127.0.0.1", live.port)) as s:
            body = json.dumps({"input": text, "response_format": "wav"}).encode()
            s.sendall(
                b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)
        calls = leavers_chunks()
        assert calls < 40, "the server kept synthesising for a client that left"
        time.sleep(0.5)
        assert leavers_chunks() == calls
    assert httpx.get(live.url + "/health").json()["active_requests"] == 0


def test_slow_reader_is_dropped_and_others_are_served(kit, live_server_factory):
    settings = ServerSettings(max_input_chars=20_000, send_timeout=1.0)
    live = live_server_factory(create_app(kit.pipeline(), settings))
    body = json.dumps({"input": _sentences(150), "response_format": "wav", "speed": 0.25}).encode()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", live.port))
        s.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        with steady_client(live.url):
            deadline = time.monotonic() + 20
            while httpx.get(live.url + "/health").json()["active_requests"] > 0:
                assert time.monotonic() < deadline, "the server never dropped a client that stopped reading"
                time.sleep(0.2)


def test_overload_answers_503_with_retry_after(kit, live_server_factory):
    engine = kit.FakeEngine(delay=0.2)
    live = live_server_factory(create_app(kit.pipeline(engine), ServerSettings(max_active=2)))
    replies: list[int] = []

    def ask() -> None:
        r = httpx.post(
            live.url + "/v1/audio/speech", json={"input": _sentences(4), "stream": False}, timeout=30
        )
        replies.append(r.status_code)
        if r.status_code == 503:
            assert r.headers["retry-after"]
            assert _error(r)["code"] == "overloaded"

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(30)
    assert sorted(replies) == [200, 200, 503, 503]


def test_timeouts(kit, live_server_factory):
    engine = kit.FakeEngine(delay=0.3)
    live = live_server_factory(create_app(kit.pipeline(engine), ServerSettings(request_timeout=0.8)))
    r = httpx.post(live.url + "/v1/audio/speech", json={"input": _sentences(8), "stream": False}, timeout=30)
    assert r.status_code == 504
    assert _error(r)["code"] == "timeout"
    # Streaming: the response has started, so the stream is cut short (no final chunk).
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            live.url + "/v1/audio/speech", json={"input": _sentences(8), "response_format": "pcm"}, timeout=30
        )
    assert httpx.get(live.url + "/health").json()["active_requests"] == 0


def test_engine_failure_mid_stream_truncates_and_before_stream_is_500(kit, live_server_factory):
    engine = kit.FakeEngine()
    engine.fail_on = {68}  # 'z'
    live = live_server_factory(create_app(kit.pipeline(engine)))
    r = httpx.post(live.url + "/v1/audio/speech", json={"input": "Zebra zone.", "response_format": "pcm"})
    assert r.status_code == 500 and _error(r)["type"] == "server_error"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            live.url + "/v1/audio/speech", json={"input": "Fine. Zebra zone. Fine.", "response_format": "pcm"}
        )
    ok = httpx.post(live.url + "/v1/audio/speech", json={"input": "Fine.", "response_format": "pcm"})
    assert ok.status_code == 200 and np.abs(decode(ok.content, fmt="pcm")[0]).max() > 0
