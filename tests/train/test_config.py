"""Training config: YAML/JSON files, dotted overrides with type coercion, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from koel.train.config import ConfigError, TrainConfig, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["tiny.yaml", "ljspeech-finetune.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, TrainConfig)
    assert cfg.run.max_steps > 0


def test_overrides_are_coerced_to_the_field_types():
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        [
            "optim.lr=2e-4",
            "run.batch_size=3",
            "model.dropout=true",
            "loss.periods=[2,3]",
            "model.train_modules=decoder,predictor",
        ],
    )
    assert cfg.optim.lr == pytest.approx(2e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.run.batch_size == 3
    assert cfg.model.dropout is True
    assert cfg.loss.periods == (2, 3)
    assert cfg.model.train_modules == ("decoder", "predictor")


def test_json_config_and_round_trip(tmp_path):
    cfg = config_from_dict({"run": {"max_steps": 7}})
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    again = load_config(path)
    assert again == cfg and again.run.max_steps == 7


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["run.bogus=1"], "unknown key.*run.bogus"),
        (["run.batch_size=two"], "run.batch_size"),
        (["run.batch_size=0"], "batch_size must be at least 1"),
        (["run.precision=fp8"], "precision"),
        (["model.train_modules=[vocoder]"], "unknown module"),
        (["lr"], "section.key=value"),
        (["run.max_steps=1.5"], "run.max_steps"),
    ],
)
def test_bad_settings_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({}, overrides)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_frozen():
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.run.max_steps = 3  # type: ignore[misc]
    assert json.loads(cfg.to_json())["run"]["max_steps"] == cfg.run.max_steps
