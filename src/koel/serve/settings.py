"""Server settings: one frozen dataclass, filled from ``koel serve`` flags or by tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from koel.constants import MAX_PHONEMES

MODEL_IDS: tuple[str, ...] = ("kokoro", "koel", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""Model ids the speech endpoint accepts: ours, and OpenAI's so that existing clients work unchanged."""

OPENAI_VOICES: dict[str, str] = {
    "alloy": "af_alloy",
    "ash": "am_adam",
    "ballad": "bm_lewis",
    "coral": "af_kore",
    "echo": "am_echo",
    "fable": "bm_fable",
    "onyx": "am_onyx",
    "nova": "af_nova",
    "sage": "am_michael",
    "shimmer": "af_sky",
    "verse": "am_puck",
    "marin": "af_heart",
    "cedar": "am_eric",
}
"""OpenAI voice names -> Kokoro voices of a similar character (used only when no pack has that name)."""


@dataclass(frozen=True)
class BatchPolicy:
    """How the scheduler groups same-time short requests into one engine call.

    A request is "short" when it has at most ``max_tokens`` token ids. The scheduler waits at most
    ``window_ms`` for company, and only while other requests are in flight.
    """

    enabled: bool = False
    window_ms: float = 8.0
    max_batch: int = 8
    max_tokens: int = 128

    def __post_init__(self) -> None:
        if self.window_ms < 0 or self.max_batch < 1 or self.max_tokens < 1:
            raise ValueError(f"invalid batch policy {self}: window_ms >= 0, max_batch >= 1, max_tokens >= 1")


@dataclass(frozen=True)
class ServerSettings:
    """Limits, security and scheduling of the HTTP server. Every limit is configurable.

    ``api_key``: when set, every ``/v1`` and ``/dev`` endpoint but the health check needs
    ``Authorization: Bearer <api_key>``.
    ``cors_origins``: origins allowed to call the API from a browser (``("*",)`` for any, empty for
    no CORS headers). ``request_timeout``: seconds one request may spend synthesising.
    ``send_timeout``: seconds one write to a client may block (a client that stops reading is
    dropped). ``body_timeout``: seconds to receive a whole request body.
    ``max_active``: requests synthesising at once; more are answered 503 with Retry-After.
    ``workers``: engine threads (1 suits a CPU engine that already uses every core).
    ``first_chunk_phonemes`` / ``chunk_phonemes``: longest first / later chunk (koel's front end
    cuts at sentence, then clause boundaries); a short first chunk means early first audio.
    ``first_chunk_priority``: a request's first chunk runs before later chunks of other requests.
    ``stream_tiles``: on engines that stream (koel's ``fast``), send a chunk's audio in time tiles as
    they are made (the first after a fraction of the chunk's compute) instead of whole chunks.
    ``trim_interval``: seconds between handing freed heap memory back to the OS (glibc
    ``malloc_trim`` after an engine call, and once after the engine has been idle that long); None
    never trims.
    """

    max_input_chars: int = 4096
    max_body_bytes: int = 256 * 1024
    max_voice_chars: int = 256
    request_timeout: float = 600.0
    send_timeout: float = 60.0
    body_timeout: float = 30.0
    max_active: int = 64
    workers: int = 1
    first_chunk_phonemes: int = 100
    chunk_phonemes: int = 250
    first_chunk_priority: bool = True
    stream_tiles: bool = True
    trim_interval: float | None = 1.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    default_format: str = "mp3"
    voice_aliases: dict[str, str] = field(default_factory=lambda: dict(OPENAI_VOICES))
    models: tuple[str, ...] = MODEL_IDS
    serve_web_page: bool = True

    def __post_init__(self) -> None:
        positive = {
            "max_input_chars": self.max_input_chars,
            "max_body_bytes": self.max_body_bytes,
            "max_voice_chars": self.max_voice_chars,
            "request_timeout": self.request_timeout,
            "send_timeout": self.send_timeout,
            "body_timeout": self.body_timeout,
            "max_active": self.max_active,
            "workers": self.workers,
            "first_chunk_phonemes": self.first_chunk_phonemes,
            "chunk_phonemes": self.chunk_phonemes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"server setting {name} must be positive, got {value}")
        if max(self.first_chunk_phonemes, self.chunk_phonemes) > MAX_PHONEMES:
            raise ValueError(f"chunks hold at most {MAX_PHONEMES} phonemes")
        if self.trim_interval is not None and self.trim_interval <= 0:
            raise ValueError(f"trim_interval must be positive or None, got {self.trim_interval}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty: pass a real key or leave it unset")
