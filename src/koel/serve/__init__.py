"""koel's HTTP server: an OpenAI-compatible speech API, streaming, a web page, hardened for abuse.

``create_app(pipeline_or_engine, settings)`` builds the ASGI app; ``koel serve`` runs it on uvicorn.
The app (FastAPI, uvicorn) is imported on first use, so ``koel``'s other commands stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from koel.serve.settings import BatchPolicy, ServerSettings

if TYPE_CHECKING:
    from koel.serve.app import create_app

__all__ = ["BatchPolicy", "ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from koel.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'koel.serve' has no attribute {name!r}")
