"""The exceptions of voice creation: bad reference audio, missing tools, failed optimisation."""

from __future__ import annotations


class CloneError(ValueError):
    """Voice creation cannot go on; the message says what is wrong and what to do."""


class ReferenceAudioError(CloneError):
    """A reference recording that cannot be used (unreadable, silent, too short, not speech)."""


class MissingDependencyError(CloneError, ImportError):
    """An optional package that this step needs is not installed."""
