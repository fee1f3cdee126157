"""Exceptions raised while locating, verifying or converting model weights."""

from __future__ import annotations


class WeightsError(RuntimeError):
    """Weights are missing, corrupt or laid out differently than expected.

    The message always says what to do about it (which package to reinstall, which file to delete).
    """
