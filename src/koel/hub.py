"""Hugging Face hub downloads that fail fast when the hub cannot be reached.

``huggingface_hub`` retries a failing request five times with back-off (about 25 s) before it
gives up, and koel may look up several files in one command. One quick probe (a single TCP
connection, 3 s at most) per process decides instead: when the hub is unreachable, only files
already in the local Hugging Face cache are used.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


def offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@functools.cache
def hub_reachable(endpoint: str | None = None) -> bool:
    """True if a TCP connection to the hub's endpoint (``HF_ENDPOINT`` or huggingface.co) opens."""
    if offline_requested():
        return False
    url = urlsplit(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError as exc:
        log.info(
            "Hugging Face hub at %s:%s is not reachable (%s); using the local cache only", host, port, exc
        )
        return False


def hub_download(repo_id: str, filename: str) -> Path:
    """``hf_hub_download``; when the hub is unreachable, the locally cached copy or an error at once."""
    from huggingface_hub import hf_hub_download

    if hub_reachable():
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=True))
