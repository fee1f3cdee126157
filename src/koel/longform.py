"""Speak a text of any size into a file: streaming writes, bounded memory, resumable jobs.

Without ``resume`` the chosen format's streaming writer receives each chunk as it is made. With
``resume`` the audio is first appended to a spool (16-bit PCM next to the output, flushed after
every chunk with a small journal); an interrupted run restarts after the last finished chunk, and
the final file is encoded from the spool in one streaming pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from koel.constants import SAMPLE_RATE
from koel.pipeline import Pipeline
from koel.types import AudioChunk, WordTimestamp

SPOOL_BLOCK = SAMPLE_RATE * 10


@dataclass
class JobResult:
    seconds: float = 0.0
    chunks: int = 0
    resumed_from: int = 0
    words: list[WordTimestamp] = field(default_factory=list)


def _trimming(tick: Callable[[AudioChunk], None]) -> Callable[[AudioChunk], None]:
    """``tick``, then the freed heap back to the OS (:func:`koel.memory.trim`) after every chunk.

    Chunks of a long text keep changing length, and each new length leaves its freed blocks where
    the next chunk's blocks may not fit; handing them back after each chunk (a few ms per 10-30 s of
    audio) keeps a book's peak memory close to one chunk's (bench/longform.py memory).
    """
    from koel.memory import trim

    def done(chunk: AudioChunk) -> None:
        tick(chunk)
        trim()

    return done


def _job_key(text: str, settings: dict) -> str:
    h = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _progress(total: int, enabled: bool | None) -> Callable[[AudioChunk], None]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return lambda chunk: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="char", unit_scale=True, desc="koel", leave=False)
    return lambda chunk: bar.update(len(chunk.text) + 1)


def speak_to_file(
    pipe: Pipeline,
    text: str,
    target: str | Path | BinaryIO,
    *,
    fmt: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    keep_words: bool = True,
    low_latency: bool = False,
    **stream_kwargs,
) -> JobResult:
    """Synthesise ``text`` into ``target`` (path or binary stream) and return timings and words.

    ``low_latency`` writes audio tile by tile as :meth:`Pipeline.pieces` makes it (for pipes into a
    player); otherwise chunk by chunk (:meth:`Pipeline.stream`). Not with ``resume``.
    """
    from koel.audio import format_from_path, open_writer

    if fmt is None:
        if not isinstance(target, (str, Path)):
            raise ValueError("a format is needed when writing to a stream")
        fmt = format_from_path(target)
    tick = _trimming(_progress(len(text), progress))
    result = JobResult()
    if not resume or not isinstance(target, (str, Path)):
        with open_writer(target, fmt) as writer:
            for chunk in _chunks_written(pipe, text, writer, low_latency, stream_kwargs):
                result.seconds += len(chunk.audio) / SAMPLE_RATE
                result.chunks += 1
                if keep_words:
                    result.words.extend(chunk.words)
                tick(chunk)
        return result
    if low_latency:
        raise ValueError("low_latency writes as audio is made; it cannot resume a job")
    return _resumable(pipe, text, Path(target), fmt, tick, result, keep_words, stream_kwargs)


def _chunks_written(
    pipe: Pipeline, text: str, writer, low_latency: bool, stream_kwargs
) -> Iterator[AudioChunk]:  # type: ignore[no-untyped-def]
    """Write the audio of ``text`` to ``writer``; yield each chunk once all of its audio is written."""
    if not low_latency:
        for chunk in pipe.stream(text, **stream_kwargs):
            writer.write(chunk.audio)
            yield chunk
        return
    for piece in pipe.pieces(text, **stream_kwargs):
        if len(piece.audio):
            writer.write(piece.audio)
        if piece.chunk is not None:
            yield piece.chunk


def _resumable(
    pipe, text, target: Path, fmt, tick, result: JobResult, keep_words: bool, stream_kwargs
) -> JobResult:
    from koel.audio import open_writer

    spool = target.with_name(target.name + ".koel-partial")
    settings = {k: str(v) for k, v in sorted(stream_kwargs.items())} | {"voice_default": pipe.voice.name}
    key = _job_key(text, settings)
    journal_path, pcm_path, words_path = spool / "job.json", spool / "audio.s16", spool / "words.jsonl"
    done = samples = words_bytes = 0
    if journal_path.exists():
        journal = json.loads(journal_path.read_text())
        if journal.get("key") == key:
            done, samples, words_bytes = journal["chunks_done"], journal["samples"], journal["words_bytes"]
        else:
            shutil.rmtree(spool)
    spool.mkdir(parents=True, exist_ok=True)
    result.resumed_from = done
    offset = samples / SAMPLE_RATE
    with open(pcm_path, "ab") as pcm, open(words_path, "ab") as words_file:
        # Drop whatever a killed run wrote after its last journal entry.
        pcm.truncate(samples * 2)
        pcm.seek(samples * 2)
        words_file.truncate(words_bytes)
        words_file.seek(words_bytes)
        for chunk in pipe.stream(text, skip_chunks=done, **stream_kwargs):
            pcm.write((np.clip(chunk.audio, -1, 1) * 32767).astype("<i2").tobytes())
            for w in chunk.words if keep_words else ():
                shifted = WordTimestamp(w.word, w.start + offset, w.end + offset, w.char_start, w.char_end)
                words_file.write((json.dumps(shifted.__dict__) + "\n").encode())
            for f in (pcm, words_file):
                f.flush()
                os.fsync(f.fileno())
            samples += len(chunk.audio)
            words_bytes = words_file.tell()
            done = chunk.index + 1
            tmp = journal_path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"key": key, "chunks_done": done, "samples": samples, "words_bytes": words_bytes})
            )
            os.replace(tmp, journal_path)
            result.chunks += 1
            tick(chunk)
    with open(pcm_path, "rb") as pcm, open_writer(target, fmt) as writer:
        while block := pcm.read(SPOOL_BLOCK * 2):
            writer.write(np.frombuffer(block, dtype="<i2").astype(np.float32) / 32767)
    if keep_words:
        with open(words_path, encoding="utf-8") as lines:
            result.words = [WordTimestamp(**json.loads(line)) for line in lines if line.strip()]
    shutil.rmtree(spool)
    result.seconds = samples / SAMPLE_RATE
    return result
