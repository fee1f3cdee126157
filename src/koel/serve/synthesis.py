"""The bridge between HTTP requests and the pipeline: voices, admission, threads, streams, errors.

Each request iterates the shared pipeline's ``pieces`` (or, with ``stream_tiles`` off or an engine
that cannot stream, its ``stream``: whole chunks) in a worker thread, one piece per step, with its
own :class:`~koel.serve.batching.JobEngine`, so all model work goes through the scheduler (fair
order, optional batching) and the event loop never runs model code. On koel's ``fast`` engine the
first chunk then arrives in time tiles, the first of them after a fraction of the chunk's compute
(bench/speed.py, ``serve`` section, measures the first byte). The first piece is made before the
response starts, so input errors still get a 4xx status; a failure later ends the stream without
its final bytes, so a client can tell a truncated response from a whole one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

import anyio
import numpy as np

from koel.audio import AudioFormatError, StreamEncoder
from koel.backends.base import Engine
from koel.constants import MAX_PHONEMES
from koel.pipeline import Pipeline
from koel.serve.batching import JobCancelled, JobEngine, Scheduler, SchedulerClosed, SynthesisTimeout
from koel.serve.errors import APIError
from koel.serve.settings import ServerSettings
from koel.types import AudioChunk, PhonemeChunk
from koel.voices import Voice, VoiceError, blend, parse_blend

log = logging.getLogger(__name__)

_PAREN_WEIGHT = re.compile(r"([A-Za-z0-9_.\-]+)\s*\(\s*([^()]*)\s*\)")
"""Kokoro-FastAPI's blend syntax ``af_bella(2)+af_sky(1)``; koel's is ``af_bella:2+af_sky:1``."""


@dataclass(frozen=True)
class SpeechJob:
    """A validated speech request."""

    text: str
    voice: Voice
    lang: str
    speed: float = 1.0
    fmt: str = "mp3"
    volume: float = 1.0
    whole_chunks: bool = False  # one piece per chunk (captioned streams), never time tiles


@dataclass(frozen=True)
class Piece:
    """Encoded bytes ready to send. ``chunk`` is set on the last piece of each chunk (its words and
    durations); ``tail`` marks the stream's last piece (the encoder's final bytes)."""

    data: bytes
    chunk: AudioChunk | None
    tail: bool = False


def _frontend_errors() -> tuple[type[BaseException], ...]:
    try:
        from koel.text.g2p.base import FrontEndUnavailable
    except ImportError:  # the front end may move; its unavailability then surfaces as a 500
        return ()
    return (FrontEndUnavailable,)


def to_api_error(exc: BaseException) -> APIError:
    """Map a library exception to the status and message the client should see."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, VoiceError):
        return APIError(400, str(exc), param="voice", code="voice_not_found")
    if isinstance(exc, AudioFormatError):
        return APIError(400, str(exc), param="response_format", code="invalid_value")
    if isinstance(exc, SynthesisTimeout):
        return APIError(504, "synthesis took longer than the server's time limit", code="timeout")
    if isinstance(exc, SchedulerClosed):
        return APIError(
            503,
            "the server is shutting down; retry shortly",
            code="unavailable",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, _frontend_errors()):
        return APIError(
            400, f"this server cannot speak that language: {exc}", param="lang", code="language_unavailable"
        )
    if isinstance(exc, ValueError):
        return APIError(400, str(exc), param="input", code="invalid_value")
    log.error("synthesis failed", exc_info=exc)
    return APIError(500, "synthesis failed; the server log has the details", code="server_error")


class _RequestPipeline(Pipeline):
    """The shared pipeline as one request sees it: its own engine handle, front-end calls serialised.

    G2P back ends (espeak-ng above all) are not thread-safe, so every step of the front end runs
    under one lock; the model, which is where the time goes, runs unlocked in the scheduler.
    With koel's front end, chunks are kept short for streaming: the first at most
    ``first_chunk_phonemes`` (it sets the time to first audio), each next one at most twice the one
    before, up to ``chunk_phonemes``.
    """

    def __init__(
        self, base: Pipeline, engine: Engine, lock: threading.Lock, settings: ServerSettings
    ) -> None:
        self.__dict__.update(base.__dict__)
        self.engine = engine
        self._frontend_lock = lock
        self._limits = (settings.first_chunk_phonemes, settings.chunk_phonemes)

    def _locked(self, make: Callable[[], Iterable[PhonemeChunk]]) -> Generator[PhonemeChunk, None, None]:
        with self._frontend_lock:
            it = iter(make())
        while True:
            with self._frontend_lock:
                chunk = next(it, None)
            if chunk is None:
                return
            yield chunk

    def chunks(
        self,
        text: str,
        *,
        lang: str,
        raw_phonemes: bool = False,
        first_chunk_phonemes: int = 0,
        chunk_phonemes: int = MAX_PHONEMES,
    ) -> Iterator[PhonemeChunk]:
        # the server's own limits (ServerSettings) replace the caller's
        first_limit, limit = self._limits
        yield from self._locked(
            lambda: Pipeline.chunks(
                self,
                text,
                lang=lang,
                raw_phonemes=raw_phonemes,
                first_chunk_phonemes=first_limit,
                chunk_phonemes=limit,
            )
        )


def _produce(pipe: Pipeline, job: SpeechJob) -> Iterator[Piece]:
    """Synthesise and encode piece by piece (runs in a worker thread, one step per ``next``)."""
    encoder = StreamEncoder(job.fmt)
    gain = np.float32(job.volume)
    make = pipe.stream if job.whole_chunks else pipe.pieces
    try:
        for piece in make(job.text, voice=job.voice, lang=job.lang, speed=job.speed):
            audio = piece.audio if job.volume == 1.0 else piece.audio * gain
            yield Piece(encoder.encode(audio), piece if isinstance(piece, AudioChunk) else piece.chunk)
        yield Piece(encoder.flush(), None, tail=True)
    finally:
        encoder.flush()


class AudioStream:
    """The pieces of one request, produced in a worker thread. Always ``aclose()`` it."""

    def __init__(self, service: SpeechService, job_engine: JobEngine, pieces: Iterator[Piece]) -> None:
        self._service = service
        self._engine = job_engine
        self._pieces = pieces
        self._running = False
        self._closed = False

    def __aiter__(self) -> AudioStream:
        return self

    async def __anext__(self) -> Piece:
        if self._closed:
            raise StopAsyncIteration
        if self._engine.job.remaining() <= 0:
            raise SynthesisTimeout(f"job {self._engine.job.id} ran past its deadline")
        self._running = True
        try:
            # abandon_on_cancel: a client that leaves stops waiting at once; aclose() cancels the
            # job, so its queued chunks are dropped and the thread ends after at most one chunk.
            piece = await anyio.to_thread.run_sync(
                next, self._pieces, None, abandon_on_cancel=True, limiter=self._service.limiter
            )
        finally:
            self._running = False
        if piece is None:
            await self.aclose()
            raise StopAsyncIteration
        return piece

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._service.scheduler.close_job(self._engine.job)
        if not self._running:
            close = getattr(self._pieces, "close", None)
            if close is not None:
                with contextlib.suppress(ValueError):  # running in an abandoned thread: it ends by itself
                    close()


class SpeechService:
    """Voices, languages and audio streams for the routes; owns the scheduler."""

    def __init__(self, pipeline: Pipeline, scheduler: Scheduler, settings: ServerSettings) -> None:
        self.pipeline = pipeline
        self.scheduler = scheduler
        self.settings = settings
        self.frontend_lock = threading.Lock()
        self.limiter = anyio.CapacityLimiter(settings.max_active + 8)

    # -- voices and languages -----------------------------------------------------------------------

    def resolve_voice(self, spec: str) -> Voice:
        """A voice or blend from the ``voice`` field; OpenAI names map to similar Kokoro voices."""
        spec = spec.strip()
        if len(spec) > self.settings.max_voice_chars:
            raise APIError(
                400,
                f"the voice field is longer than {self.settings.max_voice_chars} characters",
                param="voice",
            )
        if not spec:
            return self.pipeline.voice
        spec = _PAREN_WEIGHT.sub(r"\1:\2", spec)
        store = self.pipeline.voices
        try:
            parts = parse_blend(spec)
            voices = [(self._find(store, name), weight) for name, weight in parts]
        except VoiceError as exc:
            raise to_api_error(exc) from None
        if len(voices) == 1:
            return voices[0][0]
        return blend(voices, name="+".join(f"{v.name}:{w:.3g}" for v, w in voices))

    def _find(self, store, name: str) -> Voice:
        try:
            return store.find(name)
        except VoiceError:
            alias = self.settings.voice_aliases.get(name.lower())
            if alias is None:
                raise
            return store.find(alias)

    def resolve_language(self, voice: Voice, lang: str | None) -> str:
        try:
            return self.pipeline.language_for(voice, lang)
        except ValueError as exc:
            raise APIError(400, str(exc), param="lang", code="invalid_value") from None

    def phonemize(self, text: str, lang: str) -> str:
        with self.frontend_lock:
            return self.pipeline.phonemize(text, lang)

    # -- streams ----------------------------------------------------------------------------------

    def _admit(self) -> None:
        if self.scheduler.open_jobs >= self.settings.max_active:
            raise APIError(
                503,
                f"the server is busy ({self.settings.max_active} requests in progress); retry shortly",
                code="overloaded",
                headers={"Retry-After": "2"},
            )

    async def open(self, job: SpeechJob) -> tuple[Piece, AudioStream]:
        """Start a stream and make its first chunk; input errors raise APIError before any byte is sent."""
        self._admit()
        self.scheduler.start()  # normally done by the app's lifespan; idempotent
        try:
            engine_job = self.scheduler.open_job(self.settings.request_timeout)
        except SchedulerClosed as exc:
            raise to_api_error(exc) from None
        job_engine = JobEngine(self.scheduler, engine_job, streaming=self.settings.stream_tiles)
        view = _RequestPipeline(self.pipeline, job_engine, self.frontend_lock, self.settings)
        stream = AudioStream(self, job_engine, _produce(view, job))
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            raise APIError(400, "the input has nothing to speak", param="input", code="empty_input") from None
        except BaseException as exc:
            await stream.aclose()
            if isinstance(exc, Exception):
                raise to_api_error(exc) from exc
            raise
        if first.tail:
            await stream.aclose()
            raise APIError(400, "the input has nothing to speak", param="input", code="empty_input")
        return first, stream


__all__ = ["AudioStream", "JobCancelled", "Piece", "SpeechJob", "SpeechService", "to_api_error"]
