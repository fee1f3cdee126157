"""Shared fixtures for the front-end tests: one FrontEnd per language, built once per session."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from koel.text import FrontEnd

sys.path.insert(0, str(Path(__file__).parent))  # test modules import fe_helpers

from fe_helpers import have

_CACHE: dict[tuple[str, bool], FrontEnd] = {}


@pytest.fixture(scope="session")
def frontend() -> Callable[..., FrontEnd]:
    """``frontend(lang, normalize=True)``: a cached FrontEnd (skips when its packages are missing)."""

    def get(lang: str = "a", normalize: bool = True) -> FrontEnd:
        if not have(lang):
            pytest.skip(f"G2P packages for {lang!r} not installed")
        key = (lang, normalize)
        if key not in _CACHE:
            _CACHE[key] = FrontEnd(lang, normalize=normalize)
        return _CACHE[key]

    return get
