"""Frozen configuration dataclasses: the model's dimensions (saved with the weights)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PLBertConfig:
    """ALBERT dimensions of the phoneme-level BERT (one layer shared by all passes)."""

    vocab_size: int = 178
    embedding_size: int = 128
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 2048
    max_position_embeddings: int = 512
    num_hidden_layers: int = 12
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


@dataclass(frozen=True)
class ISTFTNetConfig:
    """Generator dimensions (iSTFTNet with a harmonic-plus-noise source)."""

    upsample_rates: tuple[int, ...] = (10, 6)
    upsample_kernel_sizes: tuple[int, ...] = (20, 12)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    gen_istft_n_fft: int = 20
    gen_istft_hop_size: int = 5


@dataclass(frozen=True)
class ModelConfig:
    """Every dimension of Kokoro-82M. ``ModelConfig()`` is the official v1.0 model."""

    n_token: int = 178
    hidden_dim: int = 512
    style_dim: int = 128
    n_layer: int = 3
    max_dur: int = 50
    dropout: float = 0.2
    text_encoder_kernel_size: int = 5
    decoder_dim: int = 1024
    asr_res_dim: int = 64
    plbert: PLBertConfig = field(default_factory=PLBertConfig)
    istftnet: ISTFTNetConfig = field(default_factory=ISTFTNetConfig)

    @classmethod
    def tiny(cls) -> ModelConfig:
        """A small random-weight configuration for fast tests (same structure, narrow layers).

        The upsampling rates keep the product 10 * 6 * hop 5 = 300 samples per F0 step, so the
        audio length rule (600 samples per duration frame) holds for the tiny model too.
        """
        return cls(
            hidden_dim=32,
            style_dim=16,
            n_layer=2,
            decoder_dim=48,
            asr_res_dim=8,
            plbert=PLBertConfig(
                embedding_size=16,
                hidden_size=32,
                num_attention_heads=2,
                intermediate_size=64,
                num_hidden_layers=2,
            ),
            istftnet=ISTFTNetConfig(upsample_initial_channel=32),
        )

    @property
    def samples_per_frame(self) -> int:
        rates = 1
        for r in self.istftnet.upsample_rates:
            rates *= r
        return 2 * rates * self.istftnet.gen_istft_hop_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict (our own saved config, or the official ``config.json``; extra keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {
            k: v for k, v in data.items() if k in known and k not in ("plbert", "istftnet")
        }
        if isinstance(data.get("plbert"), dict):
            pk = {f.name for f in dataclasses.fields(PLBertConfig)}
            kwargs["plbert"] = PLBertConfig(
                **{
                    "vocab_size": data.get("n_token", 178),
                    **{k: v for k, v in data["plbert"].items() if k in pk},
                }
            )
        if isinstance(data.get("istftnet"), dict):
            ik = {f.name for f in dataclasses.fields(ISTFTNetConfig)}
            raw = {k: v for k, v in data["istftnet"].items() if k in ik}
            for key in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
                if key in raw:
                    raw[key] = tuple(raw[key])
            if "resblock_dilation_sizes" in raw:
                raw["resblock_dilation_sizes"] = tuple(tuple(d) for d in raw["resblock_dilation_sizes"])
            kwargs["istftnet"] = ISTFTNetConfig(**raw)
        return cls(**kwargs)
