"""``koel serve``: run the HTTP server (OpenAI-compatible speech API and web page) on uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from koel.serve.settings import BatchPolicy, ServerSettings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand to koel's command line."""
    p = sub.add_parser("serve", help="run the HTTP server (OpenAI-compatible speech API + web page)")
    net = p.add_argument_group("network")
    net.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)"
    )
    net.add_argument("--port", type=int, default=8880, help="port (default 8880, as Kokoro-FastAPI)")
    net.add_argument(
        "--api-key", help="require 'Authorization: Bearer KEY' (default: $KOEL_API_KEY, else none)"
    )
    net.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow this browser origin (repeat; '*' for any)",
    )
    net.add_argument(
        "--max-connections", type=int, default=256, help="open connections before new ones get 503"
    )
    net.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to let streams finish on shutdown"
    )
    net.add_argument("--no-web", action="store_true", help="do not serve the web page at /")

    work = p.add_argument_group("workers and batching")
    work.add_argument(
        "--workers",
        type=int,
        default=1,
        help="engine threads (default 1: one CPU call already uses all cores)",
    )
    work.add_argument("--threads", type=int, help="torch threads per engine call (default: torch's choice)")
    work.add_argument(
        "--batch", action=argparse.BooleanOptionalAction, default=False, help="batch same-time short requests"
    )
    work.add_argument(
        "--batch-window-ms", type=float, default=8.0, help="how long a short request waits for company"
    )
    work.add_argument("--batch-max", type=int, default=8, help="most requests in one engine call")
    work.add_argument(
        "--first-chunk-phonemes", type=int, default=100, help="longest first chunk (earlier first audio)"
    )
    work.add_argument(
        "--first-chunk-priority",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run each request's first chunk before later chunks of others (earlier first audio under load)",
    )
    work.add_argument(
        "--stream-tiles",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send a chunk's audio in time tiles as they are made (earlier first audio; fast engine)",
    )
    work.add_argument("--chunk-phonemes", type=int, default=250, help="longest later chunk (at most 510)")
    work.add_argument(
        "--batch-max-tokens", type=int, default=128, help="longest chunk (tokens) that may be batched"
    )

    limits = p.add_argument_group("limits")
    limits.add_argument(
        "--max-input-chars", type=int, default=4096, help="longest input text (default 4096, as OpenAI)"
    )
    limits.add_argument("--max-body-bytes", type=int, default=256 * 1024, help="largest request body")
    limits.add_argument("--max-active", type=int, default=64, help="requests synthesising at once before 503")
    limits.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds one request may synthesise"
    )
    limits.add_argument(
        "--send-timeout",
        type=float,
        default=60.0,
        help="seconds before a client that stops reading is dropped",
    )

    model = p.add_argument_group("model and voices")
    model.add_argument("--voice", help="default voice (default af_heart)")
    model.add_argument("--lang", help="default language (default: from the voice)")
    model.add_argument("--voices-dir", help="folder of voice packs (default KOEL_VOICES_DIR)")
    model.add_argument(
        "--model", help="weights: a koel checkpoint, kokoro-v1_0.pth, or 'hf' (default: embedded)"
    )
    model.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    from koel.cli import add_engine_arg

    add_engine_arg(model)
    model.add_argument("--no-warmup", action="store_true", help="skip the warm-up synthesis at start")
    mem = p.add_argument_group("memory (glibc)")
    mem.add_argument(
        "--tune-malloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="koel's allocator policy (2 arenas, warm heap; see koel.memory); --no-tune-malloc keeps glibc's defaults",
    )
    mem.add_argument(
        "--trim-interval",
        type=float,
        default=1.0,
        help="seconds between malloc_trim calls under load, and idle seconds before one more (0: never)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    api_key = args.api_key or os.environ.get("KOEL_API_KEY") or None
    return ServerSettings(
        max_input_chars=args.max_input_chars,
        max_body_bytes=args.max_body_bytes,
        request_timeout=args.request_timeout,
        send_timeout=args.send_timeout,
        max_active=args.max_active,
        workers=args.workers,
        first_chunk_phonemes=args.first_chunk_phonemes,
        chunk_phonemes=args.chunk_phonemes,
        first_chunk_priority=args.first_chunk_priority,
        stream_tiles=args.stream_tiles,
        api_key=api_key,
        cors_origins=tuple(args.cors),
        batch=BatchPolicy(
            enabled=args.batch,
            window_ms=args.batch_window_ms,
            max_batch=args.batch_max,
            max_tokens=args.batch_max_tokens,
        ),
        serve_web_page=not args.no_web,
        trim_interval=args.trim_interval or None,
    )


def build_pipeline(args: argparse.Namespace):  # -> koel.pipeline.Pipeline
    from koel.backends.auto import default_engine
    from koel.pipeline import Pipeline
    from koel.voices import VoiceStore

    engine = default_engine(
        getattr(args, "engine", None), args.device, threads=args.threads, source=args.model
    )
    store = VoiceStore(args.voices_dir) if args.voices_dir else None
    pipe = Pipeline(engine, voice=args.voice, lang=args.lang, voices=store)
    return pipe


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from koel.memory import tune_malloc
    from koel.serve.app import create_app

    settings = settings_from_args(args)
    if args.tune_malloc:
        tune_malloc()  # before the model and the threads allocate
    else:
        os.environ["KOEL_KEEP_MALLOC"] = "1"  # the engine would apply the policy otherwise
    pipe = build_pipeline(args)
    if not args.no_warmup:  # and the default voice's tile prior, which its tiled streams start from
        log.info("warming up")
        if settings.stream_tiles:
            pipe.warm_up()
        else:
            pipe.synthesize("Warming up.")
    app = create_app(pipe, settings)
    if args.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        print(
            f"koel: serving on {args.host} without an API key; anyone who can reach it can use it",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        limit_concurrency=args.max_connections,
        timeout_graceful_shutdown=args.graceful_timeout,
        timeout_keep_alive=10,
        server_header=False,
    )
    return 0
