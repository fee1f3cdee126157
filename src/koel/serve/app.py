"""The app factory: ``create_app(pipeline_or_engine, settings)`` builds the ASGI app with the engine injected.

>>> from koel.serve import create_app, ServerSettings     # doctest: +SKIP
>>> app = create_app(my_engine, ServerSettings(api_key="secret"))
>>> uvicorn.run(app, host="127.0.0.1", port=8880)
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from koel import memory
from koel.backends.base import Engine
from koel.pipeline import Pipeline
from koel.serve import errors, routes
from koel.serve.batching import Scheduler
from koel.serve.guard import RequestGuard
from koel.serve.settings import ServerSettings
from koel.serve.synthesis import SpeechService

log = logging.getLogger(__name__)


def create_app(pipeline_or_engine: Pipeline | Engine, settings: ServerSettings | None = None) -> FastAPI:
    """An ASGI app serving ``pipeline_or_engine`` (a Pipeline, or an Engine wrapped in a default one).

    The engine's calls all go through one scheduler (fair order, optional batching) whose workers
    start with the app and, on shutdown, finish the queued work before they stop.
    """
    settings = settings or ServerSettings()
    if isinstance(pipeline_or_engine, Pipeline):
        pipeline = pipeline_or_engine
    else:
        pipeline = Pipeline(pipeline_or_engine)
    trim_every = settings.trim_interval
    scheduler = Scheduler(
        pipeline.engine,
        policy=settings.batch,
        workers=settings.workers,
        first_chunk_priority=settings.first_chunk_priority,
        # Trim during steady load (rate-limited) and once more when the engine falls idle.
        after_call=memory.Trimmer(trim_every) if trim_every else None,
        on_idle=memory.trim if trim_every else None,
        idle_after=trim_every or 1.0,
    )
    service = SpeechService(pipeline, scheduler, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        log.info(
            "koel server ready: engine %s, %d worker(s), batching %s",
            pipeline.engine.name,
            settings.workers,
            "on" if settings.batch.enabled else "off",
        )
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(scheduler.stop)
            log.info("koel server stopped: %s", scheduler.stats)

    from koel import __version__

    app = FastAPI(
        title="koel",
        version=__version__,
        summary="Kokoro-82M text to speech with an OpenAI-compatible API",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.started = time.monotonic()
    errors.install(app)
    app.include_router(routes.api)
    app.include_router(routes.public)
    if settings.serve_web_page:
        app.include_router(routes.page)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        send_timeout=settings.send_timeout,
        api_key=settings.api_key,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    return app
