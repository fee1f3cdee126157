"""New voices from recordings, without training: fit a style pack through the frozen model.

>>> from koel.clone import create_voice                       # doctest: +SKIP
>>> result = create_voice(["me.wav"], name="me")               # doctest: +SKIP
>>> koel.voices.save_voice(result.voice, "voices/me.pt")       # doctest: +SKIP

Also voice arithmetic: :func:`blend_voices`, :func:`interpolate`, :func:`edit_voice` along
directions measured on the official voices (:func:`edit_directions`), :func:`measure_voice`.
"""

from __future__ import annotations

from koel.clone.arithmetic import (
    EditDirections,
    VoiceMeasure,
    blend_voices,
    edit_directions,
    edit_voice,
    interpolate,
    measure_voice,
)
from koel.clone.audio_input import ReferenceClip, load_reference, prepare_reference
from koel.clone.create import CloneOptions, CloneResult, create_voice
from koel.clone.errors import CloneError, MissingDependencyError, ReferenceAudioError
from koel.clone.objective import LossWeights
from koel.clone.space import VoiceBank, official_bank

__all__ = [
    "CloneError",
    "CloneOptions",
    "CloneResult",
    "EditDirections",
    "LossWeights",
    "MissingDependencyError",
    "ReferenceAudioError",
    "ReferenceClip",
    "VoiceBank",
    "VoiceMeasure",
    "blend_voices",
    "create_voice",
    "edit_directions",
    "edit_voice",
    "interpolate",
    "load_reference",
    "measure_voice",
    "official_bank",
    "prepare_reference",
]
