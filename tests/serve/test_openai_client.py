"""The official ``openai`` client against the server with the real Kokoro-82M: every format, streamed and not."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from koel.audio import FORMATS, decode
from koel.constants import SAMPLE_RATE
from koel.serve import create_app

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency: pip install openai")

pytestmark = pytest.mark.slow
TEXT = "Hello world, this is koel."
LOSSLESS = ("wav", "pcm", "flac")


@pytest.fixture(scope="module")
def real_server(kit, real_engine, shared_voices):
    from koel.pipeline import Pipeline
    from koel.voices import VoiceStore

    pipeline = Pipeline(real_engine, voice="af_heart", voices=VoiceStore(shared_voices, allow_download=False))
    reference = pipeline.synthesize(TEXT)
    with kit.LiveServer(create_app(pipeline)) as live:
        live.reference = reference
        yield live


@pytest.fixture(scope="module")
def client(real_server):
    with openai.OpenAI(
        base_url=real_server.url + "/v1", api_key="not-needed", max_retries=0, timeout=300
    ) as c:
        yield c


def _check(data: bytes, fmt: str, reference_samples: int) -> None:
    audio, rate = decode(data, fmt="pcm" if fmt == "pcm" else None)
    assert rate == SAMPLE_RATE
    seconds = len(audio) / rate
    assert 0.8 < seconds < 5.0, f"{fmt}: {seconds:.2f} s for {TEXT!r}"
    if fmt in LOSSLESS:
        assert len(audio) == reference_samples, fmt
    else:  # priming and padding of the lossy encoders
        assert reference_samples <= len(audio) <= reference_samples + 0.1 * rate, (
            fmt,
            len(audio),
            reference_samples,
        )
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert 0.01 < rms < 0.5, f"{fmt}: rms {rms:.4f} is not speech-like"


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_client_create(client, real_server, fmt):
    response = client.audio.speech.create(model="tts-1", voice="af_heart", input=TEXT, response_format=fmt)
    _check(response.content, fmt, len(real_server.reference.audio))


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_client_streaming(client, real_server, fmt):
    with client.audio.speech.with_streaming_response.create(
        model="kokoro", voice="af_heart", input=TEXT, response_format=fmt, speed=1.0
    ) as response:
        parts = list(response.iter_bytes(chunk_size=4096))
    assert len(parts) >= 1
    _check(b"".join(parts), fmt, len(real_server.reference.audio))


def test_openai_voice_name_and_errors(client, real_server):
    response = client.audio.speech.create(model="tts-1", voice="nova", input="Hi.", response_format="wav")
    assert decode(response.content)[0].size > 0
    with pytest.raises(openai.BadRequestError, match="voice"):
        client.audio.speech.create(model="tts-1", voice="zz_nobody", input="Hi.")
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="whisper-1", voice="af_heart", input="Hi.")


def test_real_captions_and_first_bytes(real_server):
    text = (
        "The first sentence is short. The second one takes a little longer to say, because it has a clause. "
        "A third sentence follows it, and then a fourth one comes along with a few more words to speak. "
        "The fifth and last sentence closes the paragraph."
    )
    start = time.monotonic()
    first = None
    lines = []
    with httpx.stream(
        "POST",
        real_server.url + "/v1/audio/captioned_speech",
        json={"input": text, "response_format": "pcm"},
        timeout=300,
    ) as r:
        for line in r.iter_lines():
            if line and first is None:
                first = time.monotonic() - start
            if line:
                lines.append(json.loads(line))
    total = time.monotonic() - start
    assert len(lines) >= 3, "the text should stream in several chunks"
    assert first is not None and first < 0.7 * total, (first, total)
    words = [w for line in lines for w in line["timestamps"]]
    spoken = [w["word"] for w in words if w["word"].isalpha()]
    assert spoken[:3] == ["The", "first", "sentence"]
    starts = [w["start_time"] for w in words]
    assert starts == sorted(starts)
    import base64

    audio = decode(b"".join(base64.b64decode(line["audio"]) for line in lines), fmt="pcm")[0]
    assert words[-1]["end_time"] <= len(audio) / SAMPLE_RATE + 1e-3
