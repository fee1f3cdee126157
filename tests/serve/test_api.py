"""The HTTP API with a fake engine: every endpoint, format, streaming mode and option."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from koel.audio import FORMATS, decode
from koel.constants import SAMPLE_RATE
from koel.serve import ServerSettings, create_app

TEXT = "Hello there. How are you today? Fine, thanks."
LOSSLESS = ("wav", "pcm", "flac")


def _decode(data: bytes, fmt: str) -> np.ndarray:
    audio, rate = decode(data, fmt="pcm" if fmt == "pcm" else None)
    assert rate == SAMPLE_RATE
    return audio


@pytest.fixture()
def client(fake_pipeline):
    settings = ServerSettings(voice_aliases={"alloy": "am_test"})
    with TestClient(create_app(fake_pipeline, settings)) as c:
        yield c


def _expected(pipeline, text: str = TEXT, speed: float = 1.0) -> int:
    return len(pipeline.synthesize(text, speed=speed).audio)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stream", [True, False])
def test_speech_every_format_decodes_to_the_full_length(client, fake_pipeline, fmt, stream):
    r = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": TEXT, "voice": "af_test", "response_format": fmt, "stream": stream},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(
        {"mp3": "audio/mpeg", "opus": "audio/ogg"}.get(fmt, f"audio/{fmt}")
    )
    audio = _decode(r.content, fmt)
    want = _expected(fake_pipeline)
    if fmt in LOSSLESS:
        assert len(audio) == want
    else:  # lossy encoders add priming and padding (well under 0.1 s)
        assert want <= len(audio) <= want + 0.1 * SAMPLE_RATE, (len(audio), want)
    assert np.abs(audio).max() > 0.1


def test_non_streaming_response_has_a_content_length_and_streaming_one_is_chunked(client):
    whole = client.post("/v1/audio/speech", json={"input": TEXT, "response_format": "wav", "stream": False})
    assert int(whole.headers["content-length"]) == len(whole.content)
    with client.stream("POST", "/v1/audio/speech", json={"input": TEXT, "response_format": "wav"}) as r:
        assert "content-length" not in r.headers
        parts = list(r.iter_bytes())
    assert b"".join(parts)[44:] == whole.content[44:]


def test_default_format_is_mp3_and_default_voice_is_the_pipelines(client, fake_pipeline):
    r = client.post("/v1/audio/speech", json={"input": "Hi."})
    assert r.headers["content-type"] == "audio/mpeg"
    assert len(_decode(r.content, "mp3")) >= _expected(fake_pipeline, "Hi.")


def test_speed_shortens_audio(client):
    lengths = {}
    for speed in (0.5, 1.0, 2.0):
        r = client.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "speed": speed})
        lengths[speed] = len(_decode(r.content, "pcm"))
    assert lengths[0.5] > lengths[1.0] > lengths[2.0]


def test_volume_multiplier_scales_the_audio(client):
    loud = client.post(
        "/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm", "volume_multiplier": 1.0}
    )
    soft = client.post(
        "/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm", "volume_multiplier": 0.5}
    )
    ratio = np.abs(_decode(soft.content, "pcm")).max() / np.abs(_decode(loud.content, "pcm")).max()
    assert ratio == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "voice",
    [
        "af_test:0.5+am_test:0.5",
        "af_test(1)+am_test(1)",
        "af_test,am_test",
        {"id": "am_test"},
        "alloy",
        " af_test ",
    ],
)
def test_voice_forms(client, voice):
    r = client.post("/v1/audio/speech", json={"input": "Hi.", "voice": voice, "response_format": "pcm"})
    assert r.status_code == 200, r.text


def test_blend_changes_the_voice(client):
    def pitch(voice: str) -> float:
        r = client.post(
            "/v1/audio/speech", json={"input": "Hello.", "voice": voice, "response_format": "pcm"}
        )
        audio = _decode(r.content, "pcm")
        spectrum = np.abs(np.fft.rfft(audio))
        return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))

    # The fake voices' first style value is 0, 1 (and the fake engine's pitch follows it: 220 + 40 x).
    a, b, mix = pitch("af_test"), pitch("am_test"), pitch("af_test:0.5+am_test:0.5")
    assert b - a == pytest.approx(40, abs=3)
    assert mix == pytest.approx((a + b) / 2, abs=3)


def test_sse_stream_carries_the_whole_file(client, fake_pipeline):
    r = client.post(
        "/v1/audio/speech", json={"input": TEXT, "response_format": "wav", "stream_format": "sse"}
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] > 0
    audio = _decode(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), "wav")
    assert len(audio) == _expected(fake_pipeline)


def test_captioned_speech_gives_ordered_word_timestamps_with_source_spans(client, fake_pipeline):
    r = client.post(
        "/v1/audio/captioned_speech", json={"input": TEXT, "response_format": "wav", "stream": False}
    )
    body = r.json()
    words = body["timestamps"]
    assert [w["word"] for w in words] == TEXT.split()
    for w in words:
        assert TEXT[w["char_start"] : w["char_end"]] == w["word"]
        assert 0 <= w["start_time"] <= w["end_time"]
    starts = [w["start_time"] for w in words]
    assert starts == sorted(starts)
    audio = _decode(base64.b64decode(body["audio"]), "wav")
    assert words[-1]["end_time"] <= len(audio) / SAMPLE_RATE
    assert len(audio) == _expected(fake_pipeline)


def test_captioned_speech_streams_one_json_line_per_chunk_and_subtitles_at_the_end(client):
    r = client.post(
        "/v1/audio/captioned_speech",
        json={"input": TEXT, "response_format": "mp3", "stream": True, "subtitles": "vtt"},
    )
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 4  # three sentences, then the encoder's tail
    assert [len(line["timestamps"]) for line in lines] == [2, 4, 2, 0]
    assert lines[-1]["subtitles"].startswith("WEBVTT")
    assert "How are you today?" in lines[-1]["subtitles"]
    audio = _decode(b"".join(base64.b64decode(line["audio"]) for line in lines), "mp3")
    assert len(audio) / SAMPLE_RATE > lines[-2]["timestamps"][-1]["end_time"]


def test_captioned_speech_srt_and_kokoro_fastapi_path(client):
    r = client.post("/dev/captioned_speech", json={"input": TEXT, "stream": False, "subtitles": "srt"})
    assert r.status_code == 200
    assert r.json()["subtitles"].startswith("1\n00:00:00,")


def test_voices_models_health_phonemize(client):
    voices = client.get("/v1/audio/voices").json()["voices"]
    ids = {v["id"] for v in voices}
    assert {"af_test", "am_test", "bf_test"} <= ids
    assert next(v for v in voices if v["id"] == "bf_test")["language"] == "b"
    assert {"af_test", "am_test"} <= set(client.get("/v1/audio/voices?legacy=true").json()["voices"])
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and "tts-1" in {m["id"] for m in models["data"]}
    assert client.get("/v1/models/kokoro").json()["id"] == "kokoro"
    assert client.get("/v1/models/nope").status_code == 404
    health = client.get("/health").json()
    assert health["status"] == "healthy" and health["engine"] == "fake"
    ph = client.post("/v1/audio/phonemize", json={"input": "Hello world", "lang": "a"}).json()
    assert ph["phonemes"] == "hello world" and len(ph["tokens"]) == len("hello world")
    assert (
        client.post("/dev/phonemize", json={"text": "Hello", "language": "a"}).json()["phonemes"] == "hello"
    )


def test_web_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    for name in ("index.html", "..%2F__init__.py", "app.py", "%2e%2e%2fapp.py"):
        assert client.get(f"/static/{name}").status_code == 404


def test_web_page_can_be_switched_off(fake_pipeline):
    with TestClient(create_app(fake_pipeline, ServerSettings(serve_web_page=False))) as c:
        assert c.get("/").status_code == 404
        assert c.get("/health").status_code == 200


def test_api_key(fake_pipeline):
    with TestClient(create_app(fake_pipeline, ServerSettings(api_key="s3cret"))) as c:
        body = {"input": "Hi.", "response_format": "pcm"}
        missing = c.post("/v1/audio/speech", json=body)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert (
            c.post("/v1/audio/speech", json=body, headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
        assert (
            c.post("/v1/audio/speech", json=body, headers={"Authorization": "Basic s3cret"}).status_code
            == 401
        )
        assert c.get("/v1/audio/voices").status_code == 401
        assert (
            c.post("/v1/audio/speech", json=body, headers={"Authorization": "Bearer s3cret"}).status_code
            == 200
        )
        assert c.get("/health").status_code == 200  # health checks need no key
        assert c.get("/v1/health").status_code == 200
        # Checked before the body is judged: a stranger learns nothing from how it is parsed.
        bad = c.post("/v1/audio/speech", content=b"{bad json", headers={"Content-Type": "application/json"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        assert c.post("/dev/phonemize", json={"text": "Hi"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer  s3cret "}).status_code == 200
        assert c.get("/").status_code == 200  # the page asks for the key itself


def test_cors(fake_pipeline):
    settings = ServerSettings(cors_origins=("https://app.example",))
    with TestClient(create_app(fake_pipeline, settings)) as c:
        pre = c.options(
            "/v1/audio/speech",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with TestClient(create_app(fake_pipeline)) as c:  # no CORS unless configured
        assert (
            "access-control-allow-origin"
            not in c.get("/v1/models", headers={"Origin": "https://app.example"}).headers
        )


# -- time tiles on engines that stream ------------------------------------------------------------


def _tiled_app(kit, engine, **settings):
    return create_app(kit.pipeline(engine), ServerSettings(**settings))


def test_speech_streams_the_first_chunk_in_time_tiles_with_the_voices_prior(kit):
    from koel.pipeline import FIRST_TILE_FRAMES

    engine = kit.FakeStreamingEngine()
    with TestClient(_tiled_app(kit, engine)) as c:
        tiled = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"})
    assert tiled.status_code == 200, tiled.text
    first, *later = engine.streams
    assert first["first_frames"] == FIRST_TILE_FRAMES and first["prior"] is not None and first["made"] > 1
    assert later and all(s["first_frames"] is None for s in later)
    assert all(s["thread"].startswith("koel-engine-") for s in engine.streams)
    assert len(engine.priors) == 1  # the voice's prior, made once, in the engine's thread

    plain_engine = kit.FakeStreamingEngine()
    with TestClient(_tiled_app(kit, plain_engine, stream_tiles=False)) as c:
        plain = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"})
    assert not plain_engine.streams and not plain_engine.priors
    assert tiled.content == plain.content  # the fake's tiles add up to its whole chunks


def test_without_a_prior_the_first_tile_is_the_long_unprimed_one(kit):
    """An engine that streams but gives no prior: the first chunk comes in the unprimed tiles (1 s,
    doubling; their statistics are their own window's), later chunks whole."""
    from koel.pipeline import UNPRIMED_FIRST_TILE_FRAMES

    class NoPrior(kit.FakeStreamingEngine):  # type: ignore[name-defined]
        def tile_prior(self, request):
            super().tile_prior(request)
            return None

    engine = NoPrior()
    with TestClient(_tiled_app(kit, engine)) as c:
        r = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"})
    assert r.status_code == 200, r.text
    first, *later = engine.streams
    assert first["first_frames"] == UNPRIMED_FIRST_TILE_FRAMES == 80 and first["prior"] is None
    assert engine.priors and all(s["first_frames"] is None for s in later)


def test_a_new_voices_prior_is_made_in_the_engine_thread_once(kit):
    engine = kit.FakeStreamingEngine()
    with TestClient(_tiled_app(kit, engine)) as c:
        for _ in range(2):
            r = c.post("/v1/audio/speech", json={"input": TEXT, "voice": "bf_test", "response_format": "wav"})
            assert r.status_code == 200
    assert len(engine.priors) == 1 and engine.priors[0].startswith("koel-engine-")


def test_captioned_streams_stay_one_line_per_chunk_on_a_streaming_engine(kit):
    engine = kit.FakeStreamingEngine()
    with TestClient(_tiled_app(kit, engine)) as c:
        engine.streams.clear()
        r = c.post(
            "/v1/audio/captioned_speech", json={"input": TEXT, "response_format": "wav", "stream": True}
        )
    assert len(r.text.splitlines()) == 4 and not engine.streams


def test_first_bytes_leave_before_the_first_chunk_is_done(kit, live_server_factory):
    import httpx

    engine = kit.FakeStreamingEngine(piece_delay=0.3)
    live = live_server_factory(_tiled_app(kit, engine))
    text = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen."
    with httpx.Client(base_url=live.url, timeout=30) as client:
        engine.streams.clear()
        started = time.monotonic()
        with client.stream("POST", "/v1/audio/speech", json={"input": text, "response_format": "pcm"}) as r:
            assert r.status_code == 200
            first_byte = None
            total = 0
            for data in r.iter_raw():
                if data and first_byte is None:
                    first_byte = time.monotonic() - started
                total += len(data)
        done = time.monotonic() - started
    pieces = engine.streams[0]["made"]
    assert pieces >= 3
    assert first_byte is not None and first_byte < 0.3 * pieces - 0.25 and done >= 0.3 * pieces
    assert total == 2 * len(kit.pipeline().synthesize(text).audio)
