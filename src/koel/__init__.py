"""koel: Kokoro-82M text to speech (own PyTorch model, multilingual front end, server, training)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "AudioChunk",
    "KokoroModel",
    "ModelConfig",
    "Pipeline",
    "SynthesisOptions",
    "Utterance",
    "Voice",
    "VoiceStore",
    "__version__",
    "load_model",
]

_LAZY = {
    "AudioChunk": "koel.types",
    "KokoroModel": "koel.model",
    "ModelConfig": "koel.config",
    "Pipeline": "koel.pipeline",
    "SynthesisOptions": "koel.pipeline",
    "Utterance": "koel.pipeline",
    "Voice": "koel.voices",
    "VoiceStore": "koel.voices",
    "load_model": "koel.weights.loading",
}

if TYPE_CHECKING:
    from koel.config import ModelConfig
    from koel.model import KokoroModel
    from koel.pipeline import Pipeline, SynthesisOptions, Utterance
    from koel.types import AudioChunk
    from koel.voices import Voice, VoiceStore
    from koel.weights.loading import load_model


def __getattr__(name: str) -> Any:
    """Import the public names on first use, so ``import koel`` stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'koel' has no attribute {name!r}")
