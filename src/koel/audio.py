"""Audio output formats: streaming file writers, streaming HTTP encoders, decoding and resampling.

Every format works two ways from one encoder per format: ``open_writer`` writes a file (or any binary
stream, stdout included) chunk by chunk, and ``StreamEncoder`` hands back the bytes that are ready to
send after each chunk. Nothing holds the whole utterance, so a ten-hour book needs bounded memory.

Which library backs each format, and why (the smallest set that streams every format correctly):

========  ==============================  ==========================================================
format    backend                         why
========  ==============================  ==========================================================
wav       numpy + struct (16-bit PCM)     A 44-byte header and raw samples. libsndfile cannot write a
                                          WAV to a pipe (it appends its header rewrite to the stream),
                                          so the header is written here with 0xFFFFFFFF ("unknown")
                                          sizes, the usual convention for WAV on pipes, and patched
                                          on close when the target can seek.
pcm       numpy                           Headerless s16le, mono, at ``sample_rate``.
flac      soundfile (libFLAC)             Already a koel dependency; streams in 4096-sample blocks.
opus      soundfile (libopus, Ogg)        Native 24 kHz Ogg Opus with correct pre-skip and end
                                          trimming; pages are flushed every 250 ms of audio.
mp3       PyAV (libmp3lame)               libsndfile's MP3 writer must seek back to fill its Xing
                                          frame; on a pipe it leaves an empty placeholder frame that
                                          breaks length detection. ffmpeg writes the Xing/LAME
                                          (gapless) frame only when the target can seek.
aac       PyAV (ffmpeg aac, ADTS)         libsndfile has no AAC; ADTS needs no seeking.
========  ==============================  ==========================================================

PyAV is imported only when an mp3 or aac stream is opened, or when libsndfile cannot decode an input.
Resampling uses soxr (small, made for exactly this, better than polyphase filters at equal cost).

Streams that cannot seek keep "unknown length" header fields, all valid per their specs: WAV sizes
stay 0xFFFFFFFF, FLAC's STREAMINFO keeps total_samples = 0 and no MD5. An MP3 or AAC stream without
seeking carries no gapless information, so decoders also play the encoder's priming samples (MP3:
1105 samples, AAC: 1024 samples, about 45 ms at 24 kHz) and pad the last frame.

Empty chunks are fine anywhere. A stream closed with no samples at all is a valid empty file for
wav and pcm; the compressed formats then hold no audio frames (mp3, aac, flac: no bytes at all,
opus: only its headers), which ``decode`` rejects as empty or corrupt.

Input samples are float32 mono in [-1, 1]: values outside are clipped, NaN becomes 0 and +-inf
becomes +-1 (with a warning), so one bad sample never corrupts a whole file.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from koel.constants import SAMPLE_RATE

logger = logging.getLogger(__name__)

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
"""Supported output formats, in the order of the OpenAI speech API's ``response_format``."""

MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
"""HTTP Content-Type of each format."""

EXTENSIONS = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".ogg": "opus", ".opus": "opus", ".aac": "aac"}
EXTENSIONS |= {".pcm": "pcm", ".raw": "pcm"}
"""File extension -> format."""
_ALIASES = {"ogg": "opus", "raw": "pcm"}

MP3_BIT_RATE = 64_000
AAC_BIT_RATE = 64_000
"""Bit rates for mono speech at 24 kHz: transparent for a voice, a quarter of 16-bit PCM or less."""

OPUS_PAGE_MS = 250.0
"""Ogg page length: libsndfile's default (1 s) would hold back up to a second of audio per chunk."""

OPUS_SAMPLE_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
_WAV_UNKNOWN_SIZE = 0xFFFFFFFF
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302  # sndfile.h; soundfile has no wrapper for this command
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX frames for streams of unknown length


class AudioFormatError(ValueError):
    """An unknown output format, or audio that cannot be decoded."""


def normalize_format(fmt: str) -> str:
    """Return the canonical name of ``fmt`` ("MP3" -> "mp3", "ogg" -> "opus")."""
    name = fmt.lower().lstrip(".")
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise AudioFormatError(f"unknown audio format {fmt!r}; supported formats: {', '.join(FORMATS)}")
    return name


def format_from_path(path: str | os.PathLike[str]) -> str:
    """Return the format that a file name's extension asks for (``book.ogg`` -> ``opus``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise AudioFormatError(
            f"cannot tell the audio format of {os.fspath(path)!r} from its extension; "
            f"use one of {', '.join(EXTENSIONS)} or pass the format explicitly"
        )
    return EXTENSIONS[suffix]


def _prepare(samples: Any) -> np.ndarray:
    """Check and clean one chunk: float32, 1-D, finite, within [-1, 1]."""
    x = np.asarray(samples)
    if x.ndim != 1:
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        else:
            raise ValueError(
                f"koel writes mono audio: expected 1-D samples, got shape {x.shape}; "
                "mix the channels down first (e.g. samples.mean(axis=1))"
            )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected float samples in [-1, 1], got dtype {x.dtype}; scale integers first")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        logger.warning("audio contains NaN or infinite samples: writing NaN as 0 and +-inf as +-1")
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0)


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] to little-endian int16 (the scale libsndfile uses: 32767)."""
    return np.round(x * 32767.0).astype("<i2")


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a declared dependency
        raise AudioFormatError("mp3 and aac need PyAV: pip install av") from exc
    return av


class _Spool:
    """An in-memory byte sink that encoders write to and the caller empties with ``take()``.

    It reports itself as not seekable (so ffmpeg writes a pipe-friendly stream), but answers
    ``seek``/``tell`` because libsndfile calls them unconditionally. A rewrite of bytes that were
    already taken cannot be honoured and is dropped: libsndfile only rewrites header fields (FLAC's
    length and MD5) whose initial values mean "unknown".
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]: everything before it was taken
        self._pos = 0

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        start = self._pos - self._base
        if start < 0:
            logger.debug("dropping a %d-byte header rewrite of bytes already sent", min(size, -start))
            view, start = view[-start:], 0
        if start > len(self._buf):
            self._buf.extend(bytes(start - len(self._buf)))
        self._buf[start : start + len(view)] = view
        self._pos += size
        return size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        end = self._base + len(self._buf)
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: end}[whence] + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        return b""

    def take(self) -> bytes:
        """Return the bytes written since the last call."""
        data = bytes(self._buf)
        self._base += len(self._buf)
        self._buf.clear()
        return data


_Sink = BinaryIO | _Spool
"""Where an encoder writes: the target itself when it can seek, else a spool."""


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """Header of a mono 16-bit PCM WAV; ``data_bytes`` = _WAV_UNKNOWN_SIZE for a stream."""
    riff_size = _WAV_UNKNOWN_SIZE if data_bytes == _WAV_UNKNOWN_SIZE else 36 + data_bytes
    byte_rate, block_align, bits, pcm, mono = 2 * sample_rate, 2, 16, 1, 1
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", riff_size, b"WAVE", b"fmt ", 16, pcm, mono, sample_rate, byte_rate, block_align, bits),
        *(b"data", data_bytes),
    )


class _PcmEncoder:
    """wav and pcm: 16-bit samples written as they come, the WAV header patched on close."""

    def __init__(self, out: _Sink, sample_rate: int, wav: bool) -> None:
        self._out, self._sample_rate, self._wav = out, sample_rate, wav
        self._start = out.tell() if wav and _seekable(out) else None
        self._data_bytes = 0
        if wav:
            out.write(_wav_header(sample_rate, _WAV_UNKNOWN_SIZE))

    def write(self, x: np.ndarray) -> None:
        data = _to_pcm16(x).tobytes()
        self._out.write(data)
        self._data_bytes += len(data)

    def close(self) -> None:
        if self._start is None:
            return
        if 36 + self._data_bytes >= _WAV_UNKNOWN_SIZE:
            logger.warning("WAV data exceeds 4 GiB: sizes left as 'unknown' (0xFFFFFFFF)")
            return
        end = self._out.tell()
        self._out.seek(self._start)
        self._out.write(_wav_header(self._sample_rate, self._data_bytes))
        self._out.seek(end)


class _SndfileEncoder:
    """flac and opus through libsndfile."""

    def __init__(self, out: _Sink, fmt: str, sample_rate: int) -> None:
        import soundfile as sf

        if fmt == "opus" and sample_rate not in OPUS_SAMPLE_RATES:
            raise AudioFormatError(
                f"opus supports sample rates {OPUS_SAMPLE_RATES}, not {sample_rate}; resample first"
            )
        container, subtype = {"flac": ("FLAC", "PCM_16"), "opus": ("OGG", "OPUS")}[fmt]
        self._pcm16 = fmt == "flac"
        self._file = sf.SoundFile(out, "w", sample_rate, 1, subtype, format=container)
        if fmt == "opus":
            self._set_page_latency(sf, OPUS_PAGE_MS)

    def _set_page_latency(self, sf: Any, ms: float) -> None:
        snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
        if snd is None or ffi is None:
            logger.debug("soundfile internals changed: Ogg pages keep libsndfile's default length")
            return
        value = ffi.new("double*", ms)
        snd.sf_command(self._file._file, _SFC_SET_OGG_PAGE_LATENCY_MS, value, ffi.sizeof("double"))

    def write(self, x: np.ndarray) -> None:
        self._file.write(_to_pcm16(x) if self._pcm16 else x)

    def close(self) -> None:
        self._file.close()


class _AVEncoder:
    """mp3 and aac through PyAV (ffmpeg)."""

    _SPEC: ClassVar = {"mp3": ("mp3", "libmp3lame", MP3_BIT_RATE), "aac": ("adts", "aac", AAC_BIT_RATE)}

    def __init__(self, out: _Sink, fmt: str, sample_rate: int) -> None:
        self._av = av = _import_av()
        muxer, codec, bit_rate = self._SPEC[fmt]
        rates = av.Codec(codec, "w").audio_rates
        if rates and sample_rate not in rates:
            raise AudioFormatError(f"{fmt} supports sample rates {tuple(rates)}, not {sample_rate}")
        self._container = av.open(out, mode="w", format=muxer)
        self._stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        self._stream.bit_rate = bit_rate
        self._sample_rate = sample_rate
        self._pts = 0

    def _mux(self, frame: Any) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def write(self, x: np.ndarray) -> None:
        if not len(x):
            return
        frame = self._av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = self._sample_rate
        frame.pts = self._pts
        self._pts += len(x)
        self._mux(frame)

    def close(self) -> None:
        self._mux(None)
        self._container.close()


_Encoder = _PcmEncoder | _SndfileEncoder | _AVEncoder


def _make_encoder(out: _Sink, fmt: str, sample_rate: int) -> _Encoder:
    if fmt in ("wav", "pcm"):
        return _PcmEncoder(out, sample_rate, wav=fmt == "wav")
    if fmt in ("flac", "opus"):
        return _SndfileEncoder(out, fmt, sample_rate)
    return _AVEncoder(out, fmt, sample_rate)


class StreamEncoder:
    """Encode audio chunk by chunk into bytes ready to send (HTTP streaming).

    ``encode`` returns the bytes complete so far (possibly empty), ``flush`` the tail; their
    concatenation is a valid file. The stream never seeks, so headers keep "unknown length" values.
    """

    def __init__(self, fmt: str, sample_rate: int = SAMPLE_RATE) -> None:
        self.format = normalize_format(fmt)
        self.sample_rate = sample_rate
        self.media_type = MEDIA_TYPES[self.format]
        self._spool = _Spool()
        self._encoder: _Encoder | None = _make_encoder(self._spool, self.format, sample_rate)

    def encode(self, samples: np.ndarray) -> bytes:
        """Add float32 mono samples; return the encoded bytes that are ready."""
        if self._encoder is None:
            raise RuntimeError("StreamEncoder.encode() called after flush()")
        self._encoder.write(_prepare(samples))
        return self._spool.take()

    def flush(self) -> bytes:
        """Finish the stream and return its last bytes. Later calls return b""."""
        if self._encoder is None:
            return b""
        encoder, self._encoder = self._encoder, None
        encoder.close()
        return self._spool.take()


class AudioWriter:
    """Write float32 mono chunks to a file or binary stream as they arrive; see ``open_writer``."""

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        fmt: str | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if fmt is None:
            name = target if isinstance(target, (str, os.PathLike)) else getattr(target, "name", None)
            if not isinstance(name, (str, os.PathLike)):
                raise AudioFormatError("cannot tell the audio format of a stream: pass fmt=")
            fmt = format_from_path(name)
        self.format = normalize_format(fmt)
        self.sample_rate = sample_rate
        self.samples_written = 0
        self._owned: BinaryIO | None = None
        self._stream: StreamEncoder | None = None
        self._target: BinaryIO
        path: str | os.PathLike[str] | None = None
        if isinstance(target, (str, os.PathLike)):
            path = target  # w+b: libsndfile may read back the header it rewrites on close
            self._owned = self._target = open(path, "w+b")  # noqa: SIM115 - closed in close()
        else:
            self._target = target
        try:
            if _seekable(self._target):
                self._encoder: _Encoder | None = _make_encoder(self._target, self.format, sample_rate)
            else:
                self._stream = StreamEncoder(self.format, sample_rate)
                self._encoder = None
        except BaseException:
            if self._owned is not None and path is not None:  # do not leave an empty file behind
                self._owned.close()
                os.unlink(path)
            raise

    @property
    def duration(self) -> float:
        """Seconds of audio written so far."""
        return self.samples_written / self.sample_rate

    def write(self, samples: np.ndarray) -> None:
        """Append float32 mono samples (clipped to [-1, 1]; NaN written as 0)."""
        x = _prepare(samples)
        if self._stream is not None:
            self._send(self._stream.encode(x))
        elif self._encoder is not None:
            self._encoder.write(x)
        else:
            raise ValueError("write to a closed AudioWriter")
        self.samples_written += len(x)

    def _send(self, data: bytes) -> None:
        if data:
            self._target.write(data)
            if hasattr(self._target, "flush"):
                self._target.flush()

    def close(self) -> None:
        """Finish the file (patch headers where the target can seek). Closes only files it opened."""
        try:
            if self._stream is not None:
                self._send(self._stream.flush())
                self._stream = None
            elif self._encoder is not None:
                self._encoder.close()
                self._encoder = None
        finally:
            if self._owned is not None:
                self._owned.close()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_writer(
    target: str | os.PathLike[str] | BinaryIO,
    fmt: str | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> AudioWriter:
    """Open a streaming writer; the format comes from the file extension when ``fmt`` is None.

    ``target`` is a path, or a binary stream such as ``sys.stdout.buffer`` (left open on close).
    """
    return AudioWriter(target, fmt, sample_rate)


def encode(samples: np.ndarray, fmt: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode a whole utterance into the bytes of one file (with complete headers)."""
    buffer = io.BytesIO()
    with open_writer(buffer, fmt, sample_rate) as writer:
        writer.write(samples)
    return buffer.getvalue()


def decode(
    data: bytes | str | os.PathLike[str],
    fmt: str | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, int]:
    """Decode audio bytes or a file of any common format at its own sample rate.

    Returns ``(samples, sample_rate)``: float32, shape (S,) for mono and (S, channels) otherwise.
    Headerless pcm (``fmt="pcm"``, or a ``.pcm``/``.raw`` path) is read as s16le mono at
    ``sample_rate``. libsndfile reads what it can; PyAV (ffmpeg) reads the rest (aac, m4a, webm,
    FLAC streams of unknown length). Raises AudioFormatError naming the input when neither can.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        what, raw = repr(str(path)), path.read_bytes()
        if fmt is None and path.suffix.lower() in (".pcm", ".raw"):
            fmt = "pcm"
    else:
        what, raw = f"<{len(data)} bytes>", bytes(data)
    if fmt is not None and normalize_format(fmt) == "pcm":
        if len(raw) % 2:
            raise AudioFormatError(f"cannot decode {what} as s16le pcm: odd number of bytes")
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, sample_rate
    if not raw:
        raise AudioFormatError(f"cannot decode {what}: it is empty")
    try:
        return _decode_sndfile(raw)
    except (RuntimeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        sf_error = getattr(exc, "error_string", None) or str(exc)
        logger.debug("libsndfile cannot read %s (%s); trying ffmpeg", what, sf_error)
    try:
        return _decode_av(raw)
    except AudioFormatError as av_error:
        raise AudioFormatError(
            f"cannot decode {what}: not a supported audio file, or corrupt "
            f"(libsndfile: {sf_error}; ffmpeg: {av_error})"
        ) from av_error


def _decode_sndfile(raw: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(io.BytesIO(raw)) as f:
        if f.frames >= _UNKNOWN_FRAMES:
            raise ValueError("stream of unknown length")
        samples = f.read(dtype="float32")
        return samples, int(f.samplerate)


def _decode_av(raw: bytes) -> tuple[np.ndarray, int]:
    av = _import_av()
    try:
        return _decode_av_container(av, raw)
    except av.FFmpegError as exc:
        raise AudioFormatError(getattr(exc, "strerror", None) or str(exc)) from exc


def _decode_av_container(av: Any, raw: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(raw), mode="r") as container:
        if not container.streams.audio:
            raise AudioFormatError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # keeps rate and layout; planar float32
        planes: list[np.ndarray] = []
        for frame in container.decode(stream):
            planes.extend(f.to_ndarray() for f in resampler.resample(frame))
        planes.extend(f.to_ndarray() for f in resampler.resample(None))
        rate = int(stream.codec_context.sample_rate)
    if not planes:
        raise AudioFormatError("no audio frames")
    samples = np.concatenate(planes, axis=1).T  # (S, channels)
    return np.ascontiguousarray(samples[:, 0] if samples.shape[1] == 1 else samples), rate


def resample(samples: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample (S,) or (S, channels) float audio with soxr's high-quality filter; float32 out."""
    if sr_from <= 0 or sr_to <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_from} -> {sr_to}")
    x = np.asarray(samples, dtype=np.float32)
    if sr_from == sr_to or len(x) == 0:
        return x
    import soxr

    return np.asarray(soxr.resample(x, sr_from, sr_to, quality="HQ"), dtype=np.float32)
