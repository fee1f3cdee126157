"""Where koel keeps its cache and finds voices (settings with environment overrides)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``KOEL_CACHE_DIR``, else the user cache directory (e.g. ~/.cache/koel)."""
    env = os.environ.get("KOEL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("koel", appauthor=False))


def voices_dir() -> Path | None:
    """``KOEL_VOICES_DIR`` if set: a folder of voice packs (``NAME.pt``/``.npy``/``.npz``)."""
    env = os.environ.get("KOEL_VOICES_DIR")
    return Path(env).expanduser() if env else None
