"""Training and fine-tuning of the Kokoro architecture: data, aligner, losses, DDP trainer, export.

Heavy parts import lazily; ``koel train CONFIG`` (see :mod:`koel.train.cli`) is the entry point.
"""

from __future__ import annotations

from koel.train.config import ConfigError, TrainConfig, load_config

__all__ = ["ConfigError", "TrainConfig", "load_config"]
