"""Pure nn.Modules of Kokoro-82M (no file I/O, no text processing)."""

from koel.model.kokoro import KokoroModel, ModelInputError, ModelOutput, alignment_from_durations

__all__ = ["KokoroModel", "ModelInputError", "ModelOutput", "alignment_from_durations"]
