"""Training configuration: one frozen dataclass tree, read from YAML/JSON with dotted overrides.

``load_config("configs/ljspeech-finetune.yaml", ["optim.lr=2e-4", "run.max_steps=50"])`` reads the
file, applies the overrides (values parsed as YAML scalars/lists, then coerced to the field type)
and validates the result. Unknown keys raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the key and the problem."""


@dataclass(frozen=True)
class DataConfig:
    """Where the (audio, text) pairs are and how they are turned into training features."""

    path: str = ""
    """An LJSpeech-style folder (metadata.csv + wavs/) or a JSONL manifest."""
    format: str = "auto"
    """'ljspeech', 'jsonl' or 'auto' (a folder is LJSpeech, a file is JSONL)."""
    lang: str = "a"
    """Default language code for the front end (a JSONL line may override it)."""
    text_column: int = 2
    """LJSpeech metadata column with the text (2 = normalised, 1 = raw)."""
    holdout: int = 4
    """The last N utterances (in file order) are held out for validation."""
    limit: int = 0
    """Use only the first N utterances (0 = all)."""
    cache_dir: str = ""
    """Feature cache (default: <run.output_dir>/cache)."""
    min_seconds: float = 0.5
    max_seconds: float = 20.0
    loudness_db: float = -26.0
    """Scale every clip to this RMS level (dBFS), about Kokoro's own output level; 0 keeps the level."""
    silence_db: float = -50.0
    """Clips whose RMS is below this (dBFS) are rejected as silent."""
    max_phonemes_per_second: float = 30.0
    """More phonemes per second than this means the text does not match the audio."""
    pitch: str = "ac"
    """Praat pitch method (parselmouth): 'ac' (autocorrelation) or 'cc' (cross-correlation)."""
    f0_floor: float = 50.0
    f0_ceil: float = 600.0


@dataclass(frozen=True)
class ModelSection:
    """Which model to start from and what to train."""

    init: str = "default"
    """'default' (official Kokoro-82M weights), a koel checkpoint folder, 'random' or 'tiny' (tests)."""
    voice_init: str = "af_heart"
    """Starting voice pack: a voice name or file, or 'zeros'."""
    voice_name: str = "my_voice"
    """Name of the learned voice file(s) written at export."""
    train_modules: tuple[str, ...] = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    train_voice: bool = True
    dropout: bool = True
    """False puts the model in eval mode while training (deterministic steps; tests)."""
    stochastic_source: bool = True
    """Random harmonic phases and noise in the source, as StyleTTS2 trains."""


@dataclass(frozen=True)
class AlignerConfig:
    """The text-to-frame aligner trained before the main loop (see :mod:`koel.train.aligner`)."""

    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-3
    channels: int = 128
    prior_scale: float = 1.0
    """Beta-binomial diagonal prior strength (0 disables it)."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    decoder_lr: float = 1e-4
    """The decoder's rate (StyleTTS2 fine-tuning uses 1e-5 here: the vocoder is already good)."""
    bert_lr: float = 1e-5
    voice_lr: float = 2e-3
    disc_lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-9
    """Adam epsilon (StyleTTS2: 1e-9)."""
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    warmup_steps: int = 0


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (StyleTTS2 lambdas) and discriminator settings."""

    mel: float = 5.0
    gen: float = 1.0
    feature_matching: float = 2.0
    tprls_tau: float = 0.04
    f0: float = 1.0
    energy: float = 1.0
    duration_ce: float = 20.0
    duration_l1: float = 1.0
    adversarial: bool = True
    disc_start_step: int = 0
    disc_width: float = 1.0
    """Channel multiplier for both discriminators (1.0 = HiFi-GAN MPD / StyleTTS2 MRD widths)."""
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)


@dataclass(frozen=True)
class RunConfig:
    """The training loop: batch, crops, steps, precision, logging and checkpoints."""

    output_dir: str = "runs/koel"
    max_steps: int = 1000
    batch_size: int = 4
    """Utterances per device per micro-step; global batch = batch_size * world_size * grad_accum."""
    grad_accum: int = 1
    crop_frames: int = 64
    """Decoder crop in 25 ms frames (StyleTTS2 uses up to 200 frames = 5 s)."""
    seed: int = 1234
    device: str = "auto"
    precision: str = "auto"
    """'fp32', 'bf16', 'fp16' or 'auto' (bf16 on GPUs that have it, fp32 on CPU)."""
    log_every: int = 10
    val_every: int = 100
    val_samples: int = 2
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    num_workers: int = 0
    progress: bool = True
    tensorboard: bool = True
    threads: int = 0
    """torch intra-op threads per process (0 = leave torch's default)."""


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    aligner: AlignerConfig = field(default_factory=AlignerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a parsed YAML/JSON value to the annotated type (tuples, floats from '1e-4', ...)."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            args = typing.get_args(hint)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], key) for v in value)
            if len(value) != len(args):
                raise TypeError
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"{key}: cannot use {value!r} as {getattr(hint, '__name__', hint)}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=2e-4"`` -> (["optim", "lr"], 2e-4), the value parsed as a YAML scalar or list."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    merged: dict[str, Any] = json.loads(json.dumps(data or {}))
    for item in overrides:
        path, value = parse_override(item)
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[path[-1]] = value
    config = _build(TrainConfig, merged, "")
    validate(config)
    return config


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML (``.yaml``/``.yml``) or JSON config and apply dotted ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    return config_from_dict(data, overrides)


def validate(config: TrainConfig) -> None:
    run, data = config.run, config.data
    checks = [
        (run.batch_size >= 1, "run.batch_size must be at least 1"),
        (run.grad_accum >= 1, "run.grad_accum must be at least 1"),
        (run.crop_frames >= 4, "run.crop_frames must be at least 4 frames (100 ms)"),
        (run.max_steps >= 0, "run.max_steps must be >= 0"),
        (run.precision in ("auto", "fp32", "bf16", "fp16"), "run.precision must be auto, fp32, bf16 or fp16"),
        (data.format in ("auto", "ljspeech", "jsonl"), "data.format must be auto, ljspeech or jsonl"),
        (data.pitch in ("ac", "cc"), "data.pitch must be ac or cc"),
        (data.holdout >= 0, "data.holdout must be >= 0"),
        (0 < data.min_seconds < data.max_seconds, "need 0 < data.min_seconds < data.max_seconds"),
        (run.ckpt_every >= 1 and run.log_every >= 1 and run.val_every >= 1, "run.*_every must be >= 1"),
    ]
    unknown_modules = set(config.model.train_modules) - {
        "bert",
        "bert_encoder",
        "predictor",
        "text_encoder",
        "decoder",
    }
    checks.append((not unknown_modules, f"model.train_modules: unknown module(s) {sorted(unknown_modules)}"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
