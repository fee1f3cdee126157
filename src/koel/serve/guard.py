"""ASGI guard in front of the app: the API key, request body size and time limits, a send timeout.

With an API key configured, a request to the API (``/v1/...``, ``/dev/...``; not the health check,
the web page or its files) without ``Authorization: Bearer <key>`` gets 401 before its body is even
read, so an unauthenticated client learns nothing from how its body is judged. The body is read here in full (it is small: JSON with at most a few thousand characters), so a
client that announces or sends too much gets 413, one that trickles its body gets 408, and the app
never sees a partial body. A client that stops reading its response blocks only its own writes, and
after ``send_timeout`` seconds it is dropped.
"""

from __future__ import annotations

import hmac
import json
import logging
import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from koel.serve.errors import error_body

log = logging.getLogger(__name__)


class SlowClient(Exception):
    """A client did not accept response bytes within the send timeout."""


PUBLIC_PATHS = frozenset({"/health", "/v1/health"})
"""API paths that need no key: load balancers and monitors call the health check bare."""


def needs_key(path: str) -> bool:
    """Whether ``path`` is part of the API that an API key protects."""
    return path.startswith(("/v1/", "/dev/")) and path not in PUBLIC_PATHS


def has_key(headers: list[tuple[bytes, bytes]], key: str) -> bool:
    """Whether the headers carry ``Authorization: Bearer <key>`` (compared in constant time)."""
    given = next((value for name, value in headers if name.lower() == b"authorization"), b"")
    scheme, _, token = given.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key.encode())


async def _send_error(
    send: Send, status: int, message: str, code: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """Checks the API key, reads and bounds the request body, then calls the app with a send that
    cannot block forever."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout: float,
        send_timeout: float,
        api_key: str | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        if self.api_key is not None and needs_key(scope["path"]) and not has_key(headers, self.api_key):
            await _send_error(
                send,
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                "invalid_api_key",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        declared = dict(headers).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_error(send, 400, "the Content-Length header is not a number", "invalid_header")
                return
            if size > self.max_body_bytes:
                await _send_error(send, 413, self._too_large(size), "request_too_large")
                return
        body = await self._read_body(receive, send)
        if body is None:
            return
        await self._call_app(scope, receive, send, body)

    def _too_large(self, size: int | None) -> str:
        got = f" ({size} bytes)" if size is not None else ""
        return f"the request body is too large{got}; the limit is {self.max_body_bytes} bytes"

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 408/413 (or when the client went away)."""
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_timeout
        while True:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as waited:
                message = await receive()
            if waited.cancelled_caught:
                log.info("client sent its request body too slowly; answered 408")
                await _send_error(
                    send,
                    408,
                    f"the request body did not arrive within {self.body_timeout:g} s",
                    "request_timeout",
                )
                return None
            if message["type"] == "http.disconnect":
                return None
            part = message.get("body", b"")
            size += len(part)
            if size > self.max_body_bytes:
                await _send_error(send, 413, self._too_large(None), "request_too_large")
                return None
            chunks.append(part)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _call_app(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        replayed = False
        started = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            try:
                with anyio.fail_after(self.send_timeout):
                    await send(message)
            except TimeoutError as exc:
                raise SlowClient(f"client did not read for {self.send_timeout:g} s") from exc

        try:
            await self.app(scope, replay, timed_send)
        except SlowClient as exc:
            log.info("dropping a slow client on %s: %s", scope.get("path"), exc)
            if not started:
                raise
