"""The HTTP endpoints: OpenAI speech, captioned speech, voices, models, phonemize, health, web page."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from koel.audio import MEDIA_TYPES
from koel.serve.batching import JobCancelled
from koel.serve.errors import APIError
from koel.serve.schemas import (
    CaptionedSpeechRequest,
    CaptionedSpeechResponse,
    ModelInfo,
    PhonemizeRequest,
    PhonemizeResponse,
    SpeechRequest,
    VoiceInfo,
    WordTimestampOut,
)
from koel.serve.synthesis import AudioStream, Piece, SpeechJob, SpeechService, to_api_error
from koel.types import WordTimestamp

log = logging.getLogger(__name__)

MODEL_CREATED = 1_735_689_600
"""Unix time reported as the models' creation date (Kokoro v1.0's release month)."""


def service_of(request: Request) -> SpeechService:
    return request.app.state.service


api = APIRouter()
"""The API proper; with an API key set, RequestGuard lets only requests carrying it through."""
public = APIRouter()
page = APIRouter()


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always releases its synthesis job, however the stream ends."""

    def __init__(
        self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close()


def _stream_headers(fmt: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "Content-Disposition": f'inline; filename="speech.{fmt}"',
    }


async def _pieces(first: Piece, stream: AudioStream) -> AsyncIterator[Piece]:
    """The first piece, then the rest; a failure after the first byte ends the stream early."""
    yield first
    try:
        async for piece in stream:
            yield piece
    except JobCancelled:  # the client is gone; never end such a stream as if it were whole
        raise
    except Exception as exc:
        log.warning(
            "stream ended early (%s: %s); the client gets a truncated response", type(exc).__name__, exc
        )
        raise


async def _collect(first: Piece, stream: AudioStream) -> tuple[bytes, list[WordTimestamp]]:
    """The whole response at once (no byte has been sent, so a failure still gets its status)."""
    data = bytearray(first.data)
    words = list(first.chunk.words) if first.chunk is not None else []
    try:
        async for piece in stream:
            data += piece.data
            if piece.chunk is not None:
                words.extend(piece.chunk.words)
    except Exception as exc:
        raise to_api_error(exc) from exc
    finally:
        await stream.aclose()
    return bytes(data), words


async def _check_request(service: SpeechService, body: SpeechRequest) -> SpeechJob:
    settings = service.settings
    if body.model not in settings.models:
        raise APIError(
            404,
            f"the model '{body.model}' does not exist; use one of {', '.join(settings.models)}",
            param="model",
            code="model_not_found",
        )
    if not body.input.strip():
        raise APIError(400, "the input is empty: nothing to speak", param="input", code="empty_input")
    if len(body.input) > settings.max_input_chars:
        raise APIError(
            400,
            f"the input is {len(body.input)} characters long; this server takes at most {settings.max_input_chars}",
            param="input",
            code="string_above_max_length",
        )
    # Off the event loop: a voice may be read from disk (or fetched from the hub) on first use.
    voice = await anyio.to_thread.run_sync(service.resolve_voice, body.voice_name(), limiter=service.limiter)
    lang = service.resolve_language(voice, body.language())
    fmt = body.response_format or settings.default_format
    return SpeechJob(body.input, voice, lang, body.speed, fmt, body.volume_multiplier)


def _words_out(words: list[WordTimestamp]) -> list[dict[str, Any]]:
    return [
        WordTimestampOut(
            word=w.word,
            start_time=round(w.start, 4),
            end_time=round(w.end, 4),
            char_start=w.char_start,
            char_end=w.char_end,
        ).model_dump()
        for w in words
    ]


# -- speech ---------------------------------------------------------------------------------------


@api.post("/v1/audio/speech", response_class=Response, summary="OpenAI-compatible text to speech")
async def speech(body: SpeechRequest, request: Request) -> Response:
    service = service_of(request)
    job = await _check_request(service, body)
    media_type = MEDIA_TYPES[job.fmt]
    first, stream = await service.open(job)
    if not body.stream and body.stream_format == "audio":
        data, _ = await _collect(first, stream)
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})
    if body.stream_format == "sse":
        return ClosingStreamingResponse(
            _sse(first, stream),
            stream.aclose,
            media_type="text/event-stream",
            headers=_stream_headers(job.fmt),
        )
    return ClosingStreamingResponse(
        _raw(first, stream), stream.aclose, media_type=media_type, headers=_stream_headers(job.fmt)
    )


async def _raw(first: Piece, stream: AudioStream) -> AsyncIterator[bytes]:
    async for piece in _pieces(first, stream):
        if piece.data:
            yield piece.data


async def _sse(first: Piece, stream: AudioStream) -> AsyncIterator[bytes]:
    """OpenAI's speech events: ``speech.audio.delta`` with base64 audio, then ``speech.audio.done``."""
    tokens = frames = 0
    async for piece in _pieces(first, stream):
        if piece.chunk is not None:
            tokens += len(piece.chunk.durations)
            frames += int(piece.chunk.durations.sum())
        if piece.data:
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece.data).decode("ascii")}
            yield f"data: {json.dumps(event)}\n\n".encode()
    usage = {"input_tokens": tokens, "output_tokens": frames, "total_tokens": tokens + frames}
    yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n".encode()


# -- captioned speech -----------------------------------------------------------------------------


def _subtitles(words: list[WordTimestamp], body: CaptionedSpeechRequest) -> str | None:
    if body.subtitles is None:
        return None
    from koel.subtitles import to_srt, to_vtt

    render = to_srt if body.subtitles == "srt" else to_vtt
    return render(words, level=body.subtitle_level)


@api.post(
    "/v1/audio/captioned_speech",
    response_model=CaptionedSpeechResponse,
    summary="Speech with word timestamps",
)
@api.post("/dev/captioned_speech", include_in_schema=False)
async def captioned_speech(body: CaptionedSpeechRequest, request: Request) -> Response:
    """Audio and word timestamps: one JSON object, or (``stream``) one JSON line per chunk."""
    service = service_of(request)
    job = dataclasses.replace(await _check_request(service, body), whole_chunks=True)
    media_type = MEDIA_TYPES[job.fmt]
    first, stream = await service.open(job)
    if body.stream:
        return ClosingStreamingResponse(
            _captioned_lines(first, stream, body, media_type),
            stream.aclose,
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    data, words = await _collect(first, stream)
    response = CaptionedSpeechResponse(
        audio=base64.b64encode(data).decode("ascii"),
        audio_format=media_type,
        timestamps=[WordTimestampOut(**w) for w in _words_out(words)] if body.return_timestamps else [],
        subtitles=_subtitles(words, body),
    )
    return JSONResponse(response.model_dump(), headers={"Cache-Control": "no-cache"})


async def _captioned_lines(
    first: Piece, stream: AudioStream, body: CaptionedSpeechRequest, media_type: str
) -> AsyncIterator[bytes]:
    words: list[WordTimestamp] = []
    async for piece in _pieces(first, stream):
        chunk_words = piece.chunk.words if piece.chunk is not None else []
        words.extend(chunk_words)
        line: dict[str, Any] = {
            "audio": base64.b64encode(piece.data).decode("ascii"),
            "audio_format": media_type,
            "timestamps": _words_out(chunk_words) if body.return_timestamps else [],
        }
        if piece.tail and body.subtitles is not None:
            line["subtitles"] = _subtitles(words, body)
        yield (json.dumps(line) + "\n").encode()


# -- voices, models, phonemes ---------------------------------------------------------------------


@api.get("/v1/audio/voices", summary="Voices this server can speak with")
async def voices(request: Request, legacy: bool = False) -> dict[str, Any]:
    from koel.voices import LANGUAGE_NAMES, voice_gender, voice_language

    store = service_of(request).pipeline.voices
    names = sorted(await anyio.to_thread.run_sync(store.available))
    if legacy:
        return {"voices": names}
    infos = []
    for name in names:
        lang = voice_language(name)
        infos.append(
            VoiceInfo(
                id=name,
                name=name,
                language=lang,
                language_name=LANGUAGE_NAMES.get(lang or ""),
                gender=voice_gender(name),
            ).model_dump()
        )
    return {"voices": infos}


@api.get("/v1/models", summary="Model ids accepted by the speech endpoint")
async def models(request: Request) -> dict[str, Any]:
    ids = service_of(request).settings.models
    return {"object": "list", "data": [ModelInfo(id=m, created=MODEL_CREATED).model_dump() for m in ids]}


@api.get("/v1/models/{model_id}")
async def model(model_id: str, request: Request) -> dict[str, Any]:
    if model_id not in service_of(request).settings.models:
        raise APIError(404, f"the model '{model_id}' does not exist", param="model", code="model_not_found")
    return ModelInfo(id=model_id, created=MODEL_CREATED).model_dump()


@api.post(
    "/v1/audio/phonemize", response_model=PhonemizeResponse, summary="Text to Kokoro phonemes and token ids"
)
@api.post("/dev/phonemize", include_in_schema=False)
async def phonemize(body: PhonemizeRequest, request: Request) -> PhonemizeResponse:
    from koel.tokenizer import encode

    service = service_of(request)
    text = body.the_text()
    if text is None or not text.strip():
        raise APIError(400, "give the text to phonemize in 'input'", param="input", code="empty_input")
    if len(text) > service.settings.max_input_chars:
        raise APIError(
            400,
            f"the input is {len(text)} characters long; this server takes at most {service.settings.max_input_chars}",
            param="input",
            code="string_above_max_length",
        )
    try:
        phonemes = await anyio.to_thread.run_sync(
            service.phonemize, text, body.the_lang(), limiter=service.limiter
        )
    except ValueError as exc:
        raise APIError(400, str(exc), param="lang", code="invalid_value") from None
    return PhonemizeResponse(phonemes=phonemes, tokens=encode(phonemes))


# -- health and the web page ----------------------------------------------------------------------


@public.get("/health", summary="Liveness and load")
@public.get("/v1/health", include_in_schema=False)
async def health(request: Request) -> dict[str, Any]:
    service = service_of(request)
    stats = service.scheduler.stats
    return {
        "status": "healthy",
        "engine": service.scheduler.engine.name,
        "uptime_s": round(time.monotonic() - request.app.state.started, 1),
        "active_requests": service.scheduler.open_jobs,
        "queued_chunks": service.scheduler.queued,
        "engine_calls": stats.calls,
        "chunks": stats.chunks,
        "batched_chunks": stats.batched_chunks,
        "largest_batch": stats.largest_batch,
    }


def static_file(name: str) -> bytes:
    return resources.files("koel.serve").joinpath("static", name).read_bytes()


_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


@page.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> Response:
    return Response(static_file("index.html"), media_type="text/html; charset=utf-8")


@page.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    """The page's own files only: the name is matched against a fixed list, never used as a path."""
    allowed = {"app.js", "style.css"}
    if name not in allowed:
        raise APIError(404, f"no such file: {name}", code="not_found")
    suffix = name[name.rindex(".") :]
    return Response(static_file(name), media_type=f"{_STATIC_TYPES[suffix]}; charset=utf-8")
