"""Training data: read a corpus, check every clip, phonemise as inference does, cache the targets.

Corpora: an LJSpeech-style folder (``metadata.csv`` as ``id|text|normalized`` + ``wavs/ID.wav``) or
a JSONL manifest, one object per line: ``{"audio": "a.wav", "text": "...", "speaker": "s1",
"language": "a", "id": "...", "phonemes": "..."}`` (``audio`` relative to the manifest; ``speaker``,
``language``, ``id`` and ``phonemes`` optional; given phonemes skip the front end).

Bad clips (missing, unreadable, silent, too short or long, text that does not fit the audio) are
listed in a report and left out before training starts, so an epoch never meets them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from koel.constants import FRAME_SAMPLES, MAX_PHONEMES, SAMPLE_RATE
from koel.tokenizer import encode, with_boundaries
from koel.train.config import DataConfig
from koel.train.features import AudioFileError, extract_features, load_audio, rms_dbfs

log = logging.getLogger(__name__)

FEATURE_VERSION = 1


class DatasetError(ValueError):
    """A corpus that cannot be used at all (no manifest, no usable clip)."""


@dataclass(frozen=True)
class ManifestEntry:
    """One (audio, text) pair as listed in the corpus."""

    id: str
    audio: str
    text: str
    speaker: str = "0"
    lang: str = "a"
    phonemes: str | None = None


@dataclass(frozen=True)
class Item:
    """A clip that passed every check; its targets are in ``cache_file``."""

    id: str
    speaker: str
    lang: str
    text: str
    phonemes: str
    n_tokens: int
    frames: int
    cache_file: str


@dataclass(frozen=True)
class Problem:
    id: str
    kind: str
    detail: str


@dataclass
class DataReport:
    """What happened to every clip of the corpus."""

    kept: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.kept} clips kept ({self.seconds / 3600:.2f} h), {len(self.problems)} left out"]
        lines += [f"  {p.id}: {p.kind}: {p.detail}" for p in self.problems]
        return "\n".join(lines)


@dataclass
class PreparedData:
    train: list[Item]
    val: list[Item]
    speakers: list[str]
    report: DataReport


# -- reading corpora ----------------------------------------------------------------------------------


def read_ljspeech(folder: Path, text_column: int = 2, lang: str = "a") -> list[ManifestEntry]:
    meta = folder / "metadata.csv"
    if not meta.is_file():
        raise DatasetError(f"{folder} has no metadata.csv (expected an LJSpeech-style folder)")
    entries = []
    for line in meta.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        text = cols[min(text_column, len(cols) - 1)] if len(cols) > 1 else ""
        entries.append(
            ManifestEntry(cols[0], str(folder / "wavs" / f"{cols[0]}.wav"), text.strip(), "0", lang)
        )
    return entries


def read_jsonl(path: Path, lang: str = "a") -> list[ManifestEntry]:
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = Path(row["audio"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{path}:{n}: each line must be a JSON object with an 'audio' field ({exc})"
            ) from exc
        audio = audio if audio.is_absolute() else path.parent / audio
        entries.append(
            ManifestEntry(
                id=str(row.get("id") or audio.stem),
                audio=str(audio),
                text=str(row.get("text", "")),
                speaker=str(row.get("speaker", "0")),
                lang=str(row.get("language") or row.get("lang") or lang),
                phonemes=row.get("phonemes"),
            )
        )
    return entries


def read_corpus(cfg: DataConfig) -> list[ManifestEntry]:
    path = Path(cfg.path).expanduser()
    if not cfg.path or not path.exists():
        raise DatasetError(
            f"data.path {cfg.path!r} does not exist: point it at an LJSpeech folder or a JSONL manifest"
        )
    fmt = cfg.format if cfg.format != "auto" else ("ljspeech" if path.is_dir() else "jsonl")
    entries = (
        read_ljspeech(path, cfg.text_column, cfg.lang) if fmt == "ljspeech" else read_jsonl(path, cfg.lang)
    )
    return entries[: cfg.limit] if cfg.limit else entries


# -- phonemes: exactly the pipeline's front end -----------------------------------------------------------

_FRONTENDS: dict[str, object] = {}


def phonemize(text: str, lang: str) -> str:
    """Phonemes of ``text`` as the inference pipeline makes them (chunks joined by a space)."""
    from koel.text import FrontEnd

    if lang not in _FRONTENDS:
        _FRONTENDS[lang] = FrontEnd(lang)
    frontend = _FRONTENDS[lang]
    return " ".join(chunk.phonemes for chunk in frontend.chunks(text))  # type: ignore[attr-defined]


# -- checking and caching one clip --------------------------------------------------------------------------


def _cache_key(entry: ManifestEntry, cfg: DataConfig) -> str:
    try:
        stat = os.stat(entry.audio)
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    settings = (
        FEATURE_VERSION,
        cfg.loudness_db,
        cfg.pitch,
        cfg.f0_floor,
        cfg.f0_ceil,
        entry.text,
        entry.phonemes,
        entry.lang,
    )
    digest = hashlib.sha1(f"{entry.audio}|{stamp}|{settings}".encode()).hexdigest()[:16]
    return f"{entry.id}-{digest}"


def check_clip(entry: ManifestEntry, cfg: DataConfig, cache: Path) -> Item | Problem:
    """Check one clip and cache its targets; a Problem (never an exception) if it is unusable."""
    key = _cache_key(entry, cfg)
    meta_file = cache / f"{key}.json"
    if meta_file.is_file():
        cached = json.loads(meta_file.read_text())
        return Item(**cached["item"]) if "item" in cached else Problem(**cached["problem"])
    result = _check_uncached(entry, cfg, cache / f"{key}.safetensors")
    record = {"item": asdict(result)} if isinstance(result, Item) else {"problem": asdict(result)}
    _atomic_write(meta_file, json.dumps(record).encode())
    return result


def _check_uncached(entry: ManifestEntry, cfg: DataConfig, target: Path) -> Item | Problem:
    from safetensors.torch import save_file

    if not Path(entry.audio).is_file():
        return Problem(entry.id, "missing", f"audio file {entry.audio} not found")
    try:
        audio = load_audio(entry.audio)
    except AudioFileError as exc:
        return Problem(entry.id, "unreadable", str(exc))
    seconds = len(audio) / SAMPLE_RATE
    if not np.isfinite(audio).all():
        return Problem(entry.id, "unreadable", "audio contains NaN or infinite samples")
    if seconds < cfg.min_seconds or seconds > cfg.max_seconds:
        return Problem(
            entry.id, "length", f"{seconds:.2f} s is outside [{cfg.min_seconds}, {cfg.max_seconds}] s"
        )
    level = rms_dbfs(audio)
    if level < cfg.silence_db:
        return Problem(entry.id, "silent", f"RMS {level:.1f} dBFS is below {cfg.silence_db} dBFS")
    if cfg.loudness_db:
        audio = audio * np.float32(10.0 ** ((cfg.loudness_db - level) / 20.0))
        peak = float(np.abs(audio).max())
        if peak > 0.99:
            audio = audio * np.float32(0.99 / peak)
    try:
        phonemes = entry.phonemes if entry.phonemes is not None else phonemize(entry.text, entry.lang)
    except ValueError as exc:  # TextInputError and PhonemeError are ValueErrors
        return Problem(entry.id, "text", f"the front end cannot phonemise the text: {exc}")
    ids = encode(phonemes)
    if not ids:
        return Problem(entry.id, "text", f"no phonemes from text {entry.text!r}")
    if len(ids) > MAX_PHONEMES:
        return Problem(entry.id, "text", f"{len(ids)} phonemes exceed {MAX_PHONEMES}; split the clip")
    rate = len(ids) / seconds
    frames = -(-len(audio) // FRAME_SAMPLES)
    if rate > cfg.max_phonemes_per_second or frames < len(ids) + 2:
        return Problem(
            entry.id, "text", f"{len(ids)} phonemes for {seconds:.2f} s of audio: the text does not match"
        )
    feats = extract_features(audio, cfg.pitch, cfg.f0_floor, cfg.f0_ceil)
    tensors = {
        "audio": feats.audio,
        "mel": feats.mel,
        "f0": feats.f0,
        "energy": feats.energy,
        "ids": torch.tensor(with_boundaries(ids), dtype=torch.long),
    }
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, target)
    return Item(
        entry.id, entry.speaker, entry.lang, entry.text, phonemes, len(ids) + 2, feats.frames, str(target)
    )


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def prepare_dataset(
    cfg: DataConfig, cache: Path, rank: int = 0, world_size: int = 1, barrier=None
) -> PreparedData:
    """Check and cache every clip (the work is shared across ranks), then split train/validation."""
    entries = read_corpus(cfg)
    if not entries:
        raise DatasetError(f"{cfg.path} lists no clips")
    cache.mkdir(parents=True, exist_ok=True)
    for entry in entries[rank::world_size]:
        check_clip(entry, cfg, cache)
    if barrier is not None:
        barrier()
    results = [check_clip(entry, cfg, cache) for entry in entries]  # all cached now: cheap
    report = DataReport()
    items: list[Item] = []
    for result in results:
        if isinstance(result, Problem):
            report.problems.append(result)
        else:
            items.append(result)
    report.kept = len(items)
    report.seconds = sum(i.frames for i in items) * FRAME_SAMPLES / SAMPLE_RATE
    if report.problems:
        log.warning("data: %s", report.summary())
    if len(items) <= cfg.holdout:
        raise DatasetError(
            f"only {len(items)} usable clips, not enough to hold out {cfg.holdout}:\n{report.summary()}"
        )
    split = len(items) - cfg.holdout
    speakers = sorted({i.speaker for i in items})
    return PreparedData(items[:split], items[split:], speakers, report)


# -- batches -----------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Right-padded tensors for a micro-batch. T tokens, F frames, S = 600 F samples."""

    ids: torch.Tensor  # [B, T] long
    lengths: torch.Tensor  # [B] tokens incl. boundaries
    n_phonemes: torch.Tensor  # [B] phoneme-string length (selects the voice row)
    durations: torch.Tensor  # [B, T] frames per token (0 on padding)
    frames: torch.Tensor  # [B]
    audio: torch.Tensor  # [B, S_max]
    f0: torch.Tensor  # [B, 2F_max] Hz
    energy: torch.Tensor  # [B, 2F_max]
    speakers: torch.Tensor  # [B] long
    index: torch.Tensor  # [B] dataset positions (seed the per-item crops)

    def to(self, device: torch.device) -> Batch:
        return Batch(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class TrainDataset(torch.utils.data.Dataset):
    """Items with their cached targets and aligner durations."""

    def __init__(self, items: list[Item], durations: dict[str, torch.Tensor], speakers: list[str]) -> None:
        self.items = items
        self.durations = durations
        self.speaker_index = {s: i for i, s in enumerate(speakers)}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        item = self.items[index]
        data = load_file(item.cache_file)
        data["durations"] = self.durations[item.id]
        data["speaker"] = torch.tensor(self.speaker_index[item.speaker])
        data["n_phonemes"] = torch.tensor(len(item.phonemes))
        data["index"] = torch.tensor(index)
        return data


def collate(rows: list[dict[str, torch.Tensor]]) -> Batch:
    def pad(key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        width = max(r[key].shape[-1] for r in rows)
        out = torch.zeros(len(rows), width, dtype=dtype or rows[0][key].dtype)
        for b, r in enumerate(rows):
            out[b, : r[key].shape[-1]] = r[key]
        return out

    return Batch(
        ids=pad("ids"),
        lengths=torch.tensor([r["ids"].shape[-1] for r in rows]),
        n_phonemes=torch.stack([r["n_phonemes"] for r in rows]),
        durations=pad("durations"),
        frames=torch.tensor([r["audio"].shape[-1] // FRAME_SAMPLES for r in rows]),
        audio=pad("audio"),
        f0=pad("f0"),
        energy=pad("energy"),
        speakers=torch.stack([r["speaker"] for r in rows]),
        index=torch.stack([r["index"] for r in rows]),
    )


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Step s draws one global batch from a seeded per-epoch permutation; each rank takes its slice.

    The split depends only on (seed, step), so 1 process with batch 4 and 2 processes with batch 2
    see the same utterances, and a resumed run continues with the batches it would have seen.
    Yields ``grad_accum`` micro-batches of this rank per step, from ``start_step`` to ``max_steps``.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        world_size: int,
        rank: int,
        grad_accum: int,
        seed: int,
        start_step: int,
        max_steps: int,
    ) -> None:
        self.n = n_items
        self.batch_size = batch_size
        self.world = world_size
        self.rank = rank
        self.accum = grad_accum
        self.seed = seed
        self.start = start_step
        self.stop = max_steps
        self.global_batch = batch_size * world_size * grad_accum
        if self.global_batch > n_items:
            raise DatasetError(
                f"global batch {self.global_batch} (batch_size x world_size x grad_accum) exceeds the {n_items} training clips"
            )
        self.steps_per_epoch = n_items // self.global_batch

    def step_batch(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return perm[pos * self.global_batch : (pos + 1) * self.global_batch].tolist()

    def micro_batches(self, step: int) -> list[list[int]]:
        batch = self.step_batch(step)
        size = self.batch_size
        return [
            batch[(m * self.world + self.rank) * size : (m * self.world + self.rank + 1) * size]
            for m in range(self.accum)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield from self.micro_batches(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum
