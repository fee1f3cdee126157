"""Round trips of every output format through files, pipes and HTTP stream encoding."""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from koel import audio
from koel.constants import SAMPLE_RATE as SR

LOSSLESS = ("wav", "flac", "pcm")
EXTENSION = {"wav": ".wav", "flac": ".flac", "mp3": ".mp3", "opus": ".opus", "aac": ".aac", "pcm": ".pcm"}
PRIMING = {"mp3": 1105, "aac": 1024}
"""Encoder priming samples a decoder plays when a file carries no gapless info (see koel.audio)."""

BOUNDS = [1000, 4321, 4400, 11_111, 19_000, 27_000]  # 7 uneven chunks, one of 79 samples


def _signal(seconds: float = 1.3) -> np.ndarray:
    """A 440 Hz tone plus a 200 -> 2000 Hz chirp."""
    t = np.arange(round(seconds * SR)) / SR
    chirp = np.sin(2 * np.pi * (200 * t + 900 / seconds * t**2))
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * chirp).astype(np.float32)


SIGNAL = _signal()
CHUNKS = np.split(SIGNAL, BOUNDS)


class NoSeek(io.RawIOBase):
    """A binary stream that refuses to seek, like a socket or stdout piped to a player."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("seek")

    def write(self, b: object) -> int:
        chunk = bytes(b)  # type: ignore[call-overload]
        self.data += chunk
        return len(chunk)


def _decode(data: bytes | str | os.PathLike[str], fmt: str) -> np.ndarray:
    samples, rate = audio.decode(data, fmt="pcm" if fmt == "pcm" else None)
    assert samples.dtype == np.float32 and samples.ndim == 1
    return samples if rate == SR else audio.resample(samples, rate, SR)


def _check(decoded: np.ndarray, fmt: str, gapless: bool) -> None:
    """Duration within 50 ms; lossless bit-exact at 16 bits; lossy correlated with the right energy."""
    priming = 0 if gapless and fmt != "aac" else PRIMING.get(fmt, 0)  # ADTS has no gapless info
    y = decoded[priming:]
    assert abs(len(y) - len(SIGNAL)) / SR <= 0.050, f"{fmt}: {len(y)} samples for {len(SIGNAL)}"
    if fmt in LOSSLESS:
        assert np.array_equal(np.round(y * 32768), np.round(SIGNAL * 32767)), fmt
        return
    n = min(len(y), len(SIGNAL))
    corr = np.corrcoef(y[:n], SIGNAL[:n])[0, 1]
    energy = np.sqrt(np.mean(y[:n] ** 2) / np.mean(SIGNAL[:n] ** 2))
    assert corr > 0.9, f"{fmt}: correlation {corr:.3f}"
    assert 0.85 < energy < 1.15, f"{fmt}: energy ratio {energy:.3f}"


@pytest.mark.parametrize("fmt", audio.FORMATS)
def test_file_writer_round_trip(tmp_path, fmt):
    path = tmp_path / f"tone{EXTENSION[fmt]}"
    with audio.open_writer(path) as writer:
        for chunk in CHUNKS:
            writer.write(chunk)
    assert writer.format == fmt and writer.samples_written == len(SIGNAL)
    _check(_decode(path, fmt), fmt, gapless=True)


@pytest.mark.parametrize("fmt", audio.FORMATS)
def test_stream_encoder_round_trip(fmt):
    encoder = audio.StreamEncoder(fmt)
    parts = [encoder.encode(chunk) for chunk in CHUNKS]
    tail = encoder.flush()
    assert sum(map(len, parts)) > len(tail), f"{fmt}: most bytes should come out before flush()"
    assert encoder.flush() == b""
    _check(_decode(b"".join([*parts, tail]), fmt), fmt, gapless=False)


@pytest.mark.parametrize("fmt", audio.FORMATS)
def test_encode_whole_utterance(fmt):
    _check(_decode(audio.encode(SIGNAL, fmt), fmt), fmt, gapless=True)


@pytest.mark.parametrize("fmt", audio.FORMATS)
def test_writer_to_os_pipe(fmt):
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain() -> None:
        with os.fdopen(read_fd, "rb") as reader:
            while block := reader.read(4096):
                received.extend(block)

    thread = threading.Thread(target=drain)
    thread.start()
    with os.fdopen(write_fd, "wb") as pipe, audio.open_writer(pipe, fmt) as writer:
        for chunk in CHUNKS:
            writer.write(chunk)
    thread.join(timeout=10)
    _check(_decode(bytes(received), fmt), fmt, gapless=False)


@pytest.mark.parametrize("fmt", audio.FORMATS)
def test_writer_to_unseekable_stream_leaves_it_open(fmt):
    stream = NoSeek()
    with audio.open_writer(stream, fmt) as writer:
        for chunk in CHUNKS:
            writer.write(chunk)
    assert not stream.closed
    _check(_decode(bytes(stream.data), fmt), fmt, gapless=False)


def test_wav_sizes_patched_when_seekable_and_unknown_on_a_pipe(tmp_path):
    path = tmp_path / "a.wav"
    with audio.open_writer(path) as writer:
        writer.write(SIGNAL)
    header = path.read_bytes()[:44]
    assert struct.unpack("<I", header[4:8])[0] == 36 + 2 * len(SIGNAL)
    assert struct.unpack("<I", header[40:44])[0] == 2 * len(SIGNAL)
    piped = NoSeek()
    with audio.open_writer(piped, "wav") as writer:
        writer.write(SIGNAL)
    assert piped.data[4:8] == piped.data[40:44] == b"\xff\xff\xff\xff"
    assert sf.info(io.BytesIO(bytes(piped.data))).frames == len(SIGNAL)


@pytest.mark.parametrize(
    ("fmt", "target", "seconds"),
    [
        ("wav", "file", 600),
        ("pcm", "pipe", 600),
        ("flac", "stream", 600),
        ("opus", "stream", 60),  # libopus runs ~80x real time here: a minute keeps the suite fast
        ("mp3", "pipe", 60),
        ("aac", "stream", 60),
    ],
)
def test_memory_stays_bounded(tmp_path, fmt, target, seconds):
    chunk = _signal(2.0)
    full_bytes = seconds * SR * 4
    tracemalloc.start()
    try:
        if target == "stream":
            encoder = audio.StreamEncoder(fmt)
            sent = sum(len(encoder.encode(chunk)) for _ in range(seconds // 2)) + len(encoder.flush())
            assert sent > 0
        else:
            sink = tmp_path / f"long{EXTENSION[fmt]}" if target == "file" else NoSeek()
            with audio.open_writer(sink, fmt) as writer:
                for _ in range(seconds // 2):
                    writer.write(chunk)
                    if isinstance(sink, NoSeek):
                        sink.data.clear()  # the consumer takes the bytes; only the writer's memory counts
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < full_bytes / 10, f"{fmt}: peak {peak / 1e6:.1f} MB for {full_bytes / 1e6:.0f} MB of audio"


def test_unknown_format_lists_supported_ones(tmp_path):
    with pytest.raises(audio.AudioFormatError, match="mp3, opus, aac, flac, wav, pcm"):
        audio.StreamEncoder("wma")
    with pytest.raises(audio.AudioFormatError, match=r"\.wav"):
        audio.open_writer(tmp_path / "speech.xyz")
    with pytest.raises(audio.AudioFormatError, match="pass fmt"):
        audio.open_writer(io.BytesIO())
    assert not (tmp_path / "speech.xyz").exists()


def test_format_names_and_media_types():
    assert set(audio.MEDIA_TYPES) == set(audio.FORMATS)
    assert audio.MEDIA_TYPES["mp3"] == "audio/mpeg" and audio.MEDIA_TYPES["opus"] == "audio/ogg"
    assert audio.format_from_path("BOOK.OGG") == "opus"
    assert audio.format_from_path("out/raw.raw") == "pcm"
    assert audio.normalize_format("MP3") == "mp3"


def test_non_finite_samples_are_zeroed_or_clipped(caplog):
    samples = np.array([np.nan, np.inf, -np.inf, 2.0, -3.0, 0.5], dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="koel.audio"):
        data = audio.encode(samples, "wav")
    assert "NaN" in caplog.text
    decoded, _ = audio.decode(data)
    np.testing.assert_allclose(decoded, [0.0, 1.0, -1.0, 1.0, -1.0, 0.5], atol=1e-4)


@pytest.mark.parametrize("fmt", audio.FORMATS)
def test_empty_chunks_are_harmless(fmt):
    encoder = audio.StreamEncoder(fmt)
    empty = np.zeros(0, dtype=np.float32)
    data = b"".join([encoder.encode(empty), *(encoder.encode(c) for c in (*CHUNKS, empty)), encoder.flush()])
    _check(_decode(data, fmt), fmt, gapless=False)


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_empty_audio_gives_an_empty_file(fmt):
    decoded, rate = audio.decode(audio.encode(np.zeros(0, dtype=np.float32), fmt), fmt=fmt)
    assert decoded.shape == (0,) and rate == SR


def test_mono_only_and_float_only():
    writer = audio.StreamEncoder("wav")
    with pytest.raises(ValueError, match="mono"):
        writer.encode(np.zeros((100, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="float"):
        writer.encode(np.zeros(100, dtype=np.int16))
    assert writer.encode(np.zeros((100, 1), dtype=np.float64))  # one channel, any float width


def test_closed_writers_refuse_more_audio(tmp_path):
    writer = audio.open_writer(tmp_path / "a.flac")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(SIGNAL)
    encoder = audio.StreamEncoder("mp3")
    encoder.flush()
    with pytest.raises(RuntimeError, match="flush"):
        encoder.encode(SIGNAL)


def test_unsupported_sample_rates_are_refused(tmp_path):
    with pytest.raises(audio.AudioFormatError, match="24000"):
        audio.StreamEncoder("opus", sample_rate=22_050)
    with pytest.raises(audio.AudioFormatError, match="not 22050"):
        audio.open_writer(tmp_path / "a.opus", sample_rate=22_050)
    assert not (tmp_path / "a.opus").exists()
    with pytest.raises(audio.AudioFormatError, match="not 96000"):
        audio.StreamEncoder("mp3", sample_rate=96_000)


def test_corrupt_input_names_the_file(tmp_path):
    bad = tmp_path / "voice.mp3"
    bad.write_bytes(b"this is not audio" * 20)
    with pytest.raises(audio.AudioFormatError, match=r"voice\.mp3"):
        audio.decode(bad)
    with pytest.raises(audio.AudioFormatError, match="340 bytes"):
        audio.decode(b"this is not audio" * 20)
    truncated = audio.encode(SIGNAL, "flac")[:30]
    with pytest.raises(audio.AudioFormatError):
        audio.decode(truncated)
    with pytest.raises(audio.AudioFormatError, match="empty"):
        audio.decode(b"")


def test_decode_keeps_rate_and_channels(tmp_path):
    stereo = np.stack([SIGNAL, -SIGNAL], axis=1)
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, 44_100, subtype="PCM_16")
    decoded, rate = audio.decode(path)
    assert rate == 44_100 and decoded.shape == (len(SIGNAL), 2) and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, stereo, atol=1e-4)


def test_resample_keeps_pitch_and_length():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = audio.resample(tone, SR, 16_000)
    assert out.dtype == np.float32 and len(out) == 16_000
    assert np.argmax(np.abs(np.fft.rfft(out))) == 440  # 1 Hz bins over one second
    assert audio.resample(tone, SR, SR) is tone
