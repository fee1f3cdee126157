"""The Hugging Face hub code paths (used by online users), exercised with local files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from koel import hub
from koel.voices import VoiceStore, save_voice
from koel.weights.errors import WeightsError


@pytest.fixture
def online(monkeypatch):
    """Pretend the hub answers (the download function itself is replaced in each test)."""
    monkeypatch.setattr(hub, "hub_reachable", lambda endpoint=None: True)


def test_voice_download_path_uses_hf_hub_download(tmp_path, monkeypatch, online):
    pack = torch.randn(510, 256)
    save_voice(pack, tmp_path / "hub" / "voices" / "am_puck.pt")
    asked: list[tuple[str, str]] = []

    def fake_download(repo_id: str, filename: str) -> str:
        asked.append((repo_id, filename))
        return str(tmp_path / "hub" / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    store = VoiceStore(tmp_path / "empty", allow_download=True)
    voice = store.get("am_puck")
    assert asked == [("hexgrad/Kokoro-82M", "voices/am_puck.pt")]
    assert torch.allclose(voice.pack, pack)
    assert "hub" in ", ".join(store.available()["am_puck"])


def test_voice_download_failure_names_the_voice(tmp_path, monkeypatch, online):
    def offline(repo_id: str, filename: str) -> str:
        raise OSError("network is unreachable")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    with pytest.raises(Exception, match="am_puck"):
        VoiceStore(tmp_path / "empty", allow_download=True).get("am_puck")


def test_official_checkpoint_download_path(tmp_path, monkeypatch, online):
    from koel.weights import loading

    target = tmp_path / "kokoro-v1_0.pth"
    target.write_bytes(b"")

    def fake_download(repo_id: str, filename: str) -> str:
        assert (repo_id, filename) == ("hexgrad/Kokoro-82M", "kokoro-v1_0.pth")
        return str(target)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    assert loading.download_official() == Path(target)

    def offline(repo_id: str, filename: str) -> str:
        raise OSError("offline")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    with pytest.raises(WeightsError, match="could not download"):
        loading.load_model("hf")


def test_unreachable_hub_fails_fast_and_uses_only_the_local_cache(tmp_path, monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a local port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub.hub_reachable.cache_clear()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    calls: list[dict] = []

    def cached_only(repo_id: str, filename: str, **kwargs) -> str:
        calls.append(kwargs)
        raise OSError("not in the local cache")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", cached_only)
    start = time.perf_counter()
    with pytest.raises(Exception, match="am_puck"):
        VoiceStore(tmp_path / "empty", allow_download=True).get("am_puck")
    assert time.perf_counter() - start < 5
    assert calls == [{"local_files_only": True}]
    hub.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub.hub_reachable()
    hub.hub_reachable.cache_clear()
