"""Shared fixtures: temporary cache, the ../shared data (skipped with a reason when absent), models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_VOICES = SHARED / "voices"
LJSPEECH = SHARED / "datasets" / "ljspeech-mini"

# Tests never reach the network and never write outside temporary folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With KOEL_NO_SKIPS=1 (CI, where ../shared is present) any skipped test fails the run."""
    if os.environ.get("KOEL_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped:
        reporter.write_line(f"KOEL_NO_SKIPS=1: {skipped} test(s) skipped; every test must run here", red=True)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _koel_cache(tmp_path_factory: pytest.TempPathFactory):
    cache = os.environ.get("KOEL_TEST_CACHE") or str(tmp_path_factory.mktemp("koel-cache"))
    os.environ["KOEL_CACHE_DIR"] = cache
    if SHARED_VOICES.is_dir():
        os.environ["KOEL_VOICES_DIR"] = str(SHARED_VOICES)
    else:
        os.environ.pop("KOEL_VOICES_DIR", None)
    yield Path(cache)


@pytest.fixture(scope="session")
def shared_voices() -> Path:
    if not SHARED_VOICES.is_dir():
        pytest.skip(f"needs the official voice packs in {SHARED_VOICES} (../shared is not present)")
    return SHARED_VOICES


@pytest.fixture(scope="session")
def ljspeech() -> Path:
    if not LJSPEECH.is_dir():
        pytest.skip(f"needs {LJSPEECH} (../shared is not present)")
    return LJSPEECH


@pytest.fixture(scope="session")
def real_model(_koel_cache):
    """The full Kokoro-82M with the embedded weights (converted once per session into a tmp cache)."""
    from koel.weights.loading import load_model

    return load_model(cache=_koel_cache)


@pytest.fixture(scope="session")
def real_engine(real_model):
    from koel.backends import TorchEngine

    return TorchEngine(real_model)


@pytest.fixture()
def tiny_model():
    import torch

    from koel.config import ModelConfig
    from koel.model import KokoroModel

    torch.manual_seed(0)
    model = KokoroModel(ModelConfig.tiny()).eval()
    with torch.no_grad():  # spread the durations and keep the random spectrogram in a sane range
        model.predictor.duration_proj.linear_layer.weight.mul_(30)
        model.decoder.generator.conv_post.parametrizations.weight.original0.mul_(0.01)
    return model
