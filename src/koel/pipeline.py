"""Text -> audio chunks: front end, voice rows, engine, pauses and word timestamps in one loop.

Every consumer (files, stdout, HTTP) iterates :meth:`Pipeline.stream`; :meth:`Pipeline.synthesize`
collects the same chunks (computed in padded batches) into one utterance.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from koel.backends.base import Engine, EngineRequest, EngineResult
from koel.constants import BUNDLED_FALLBACK_VOICE, DEFAULT_VOICE, FRAME_SAMPLES, MAX_PHONEMES, SAMPLE_RATE
from koel.tokenizer import VOCAB, with_boundaries
from koel.types import AudioChunk, PhonemeChunk, WordTimestamp
from koel.voices import Voice, VoiceError, VoiceStore, voice_language

if TYPE_CHECKING:
    from koel.model.fast import TilePrior

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-call settings. Pauses are seconds of silence appended after a chunk.

    ``first_chunk_phonemes`` caps the first chunk (it sets the time to first audio: the first chunk's
    text side runs whole before anything plays); each later chunk's cap is twice the one before, up
    to the front end's limit (510). 0 turns the caps off.
    """

    speed: float = 1.0
    sentence_pause: float = 0.1
    paragraph_pause: float = 0.45
    clause_pause: float = 0.0
    first_chunk_phonemes: int = 100

    def __post_init__(self) -> None:
        if not 0.25 <= self.speed <= 4.0:
            raise ValueError(f"speed must be between 0.25 and 4.0, got {self.speed}")
        if self.first_chunk_phonemes and not 16 <= self.first_chunk_phonemes <= 510:
            raise ValueError(
                f"first_chunk_phonemes must be 0 or between 16 and 510, got {self.first_chunk_phonemes}"
            )
        for name in ("sentence_pause", "paragraph_pause", "clause_pause"):
            value = getattr(self, name)
            if not 0.0 <= value <= 10.0:
                raise ValueError(f"{name} must be between 0 and 10 seconds, got {value}")


@dataclass(frozen=True)
class AudioPiece:
    """Audio as soon as it is made (:meth:`Pipeline.pieces`): a time tile of a chunk, or its pause.

    ``chunk`` is set on the last piece of each front-end chunk (its pause, possibly empty): the whole
    :class:`AudioChunk` with its text, durations and word timestamps.
    """

    audio: np.ndarray
    chunk: AudioChunk | None = None


@dataclass
class Utterance:
    """A whole synthesised text: audio, word timestamps and the chunks it was made of."""

    audio: np.ndarray
    words: list[WordTimestamp] = field(default_factory=list)
    chunks: list[AudioChunk] = field(default_factory=list)
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


#: First generator tile of :meth:`Pipeline.pieces` (80 frames per second of audio) when the voice's
#: tile prior is known (:meth:`Pipeline.tile_prior`): 0.3 s. The tiles' AdaIN statistics then start
#: from a calibration sentence's, so the first tile need not be long to normalise well: over
#: bench/speed.py's 30 sentences, tiled DNSMOS 3.332 and log-mel correlation 0.993 with the untiled
#: audio, against 3.278 and 0.978 for a 0.5 s first tile without a prior (untiled: 3.357).
FIRST_TILE_FRAMES = 24
#: Each next tile of :meth:`Pipeline.pieces`' first chunk is this much longer than the one before.
#: A tile costs about 55 ms plus 3 ms per frame of its window (tile and 2 x 16 frames of context; the
#: last generator stage, about half of that, only 2 x 7, see koel.model.fast.generate_tiles) on the
#: 2-core bench machine, so the second tile must be small to be ready before the first (20 frames
#: once its crossfade is held back) has played: with 2.0 the paragraph stalled 0.05 s (median of 6
#: runs), with 1.5 0.016. A first tile of 16 frames came 0.04 s sooner but stalled 0.02-0.13 s.
TILE_GROWTH = 1.5
#: The first tile and growth without a prior (an engine that cannot make one, or a calibration
#: sentence the front end could not read): 1 s, doubling. Its AdaIN statistics come from its own
#: window alone, so it must be long to sound like the untiled audio. bench/speed.py's 30 sentences
#: (bf16, 2-core AVX512-BF16 CPU; untiled 0.65% WER, DNSMOS 3.357; the official export 3.332): a 0.5 s
#: first tile 0.97% / 3.265 (log-mel correlation 0.978), outside the bar of export - 0.05; 0.8 s
#: 0.65% / 3.287 (0.983); 1 s 0.97% / 3.309 (0.988). A 0.3 s tile measured -0.07 against 0.5 s earlier.
UNPRIMED_FIRST_TILE_FRAMES = 80
UNPRIMED_TILE_GROWTH = 2.0

#: Kokoro's audio runs ahead of its duration alignment: the sound of a token starts about three
#: frames (75 ms) before the frames the duration predictor gives it. hexgrad's own pipeline shifts
#: its timestamps by the same three frames; bench/timestamps.py measures the effect against Whisper.
LEAD_FRAMES = 3
#: A word's edge frames quieter than this (dB below the chunk's loudest frame) are silence: the
#: model gives a word's last phoneme the pause that follows it (a final "k" held for 300 ms).
SILENCE_DB = -35.0

#: One ordinary sentence per language, synthesised whole once per voice: its AdaIN statistics start
#: the running statistics of the voice's tiled first chunks (:meth:`Pipeline.tile_prior`).
CALIBRATION_TEXT = {
    "a": "The quick brown fox jumps over the lazy dog, and then it runs away into the quiet green forest.",
    "b": "The quick brown fox jumps over the lazy dog, and then it runs away into the quiet green forest.",
    "e": "El rápido zorro marrón salta sobre el perro perezoso, y luego corre hacia el bosque tranquilo.",
    "f": "Le rapide renard brun saute par-dessus le chien paresseux, puis il s'enfuit dans la forêt calme.",
    "h": "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर से कूदती है, और फिर शांत हरे जंगल में भाग जाती है।",
    "i": "La rapida volpe marrone salta sopra il cane pigro, e poi corre via nella foresta tranquilla.",
    "j": "すばやい茶色の狐は怠け者の犬を飛び越えて、それから静かな緑の森へ走っていきました。",
    "p": "A rápida raposa marrom pula sobre o cão preguiçoso, e depois corre para a floresta tranquila.",
    "z": "敏捷的棕色狐狸跳过了那只懒狗，然后跑进了安静的绿色森林。",
}
#: Tile priors kept per pipeline (voices x languages; about 200 KB each).
PRIOR_CACHE_SIZE = 16


def _sized(frontend: object) -> bool:
    """Whether ``frontend.chunks`` takes ``max_phonemes`` (koel's own front end)."""
    import inspect

    chunks = getattr(frontend, "chunks", None)
    return chunks is not None and "max_phonemes" in inspect.signature(chunks).parameters


def _frame_levels(audio: np.ndarray) -> np.ndarray:
    """Level of each FRAME_SAMPLES frame in dB relative to the loudest frame."""
    n = len(audio) // FRAME_SAMPLES
    if n == 0:
        return np.zeros(0)
    frames = audio[: n * FRAME_SAMPLES].astype(np.float64).reshape(n, FRAME_SAMPLES)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    return 20 * np.log10(rms / rms.max())


def word_timestamps(
    chunk: PhonemeChunk, durations: np.ndarray, offset: float, audio: np.ndarray | None = None
) -> list[WordTimestamp]:
    """Per-word start/end from per-token frames (boundary tokens included in ``durations``).

    A word spans the frames of its own phonemes, moved :data:`LEAD_FRAMES` earlier. With the
    chunk's ``audio``, silent frames at a word's edges (quieter than :data:`SILENCE_DB`) are
    trimmed, so a word before a pause ends where its sound ends. A phoneme character that the
    model does not know (dropped by the tokenizer) takes no frames.
    """
    token_of_char = np.full(len(chunk.phonemes) + 1, -1, dtype=np.int64)
    token = 1
    for i, ch in enumerate(chunk.phonemes):
        if ch in VOCAB:
            token_of_char[i] = token
            token += 1
    frame_starts = np.concatenate([[0], np.cumsum(durations)]).astype(np.int64)
    total = int(frame_starts[-1])
    levels = _frame_levels(audio) if audio is not None else None
    sec = FRAME_SAMPLES / SAMPLE_RATE
    words: list[WordTimestamp] = []
    for w in chunk.words:
        tokens = [t for t in token_of_char[w.ph_start : w.ph_end] if t >= 0]
        if tokens:
            a = max(0, int(frame_starts[tokens[0]]) - LEAD_FRAMES)
            b = min(total, max(a + 1, int(frame_starts[tokens[-1] + 1]) - LEAD_FRAMES))
            if levels is not None and len(levels):
                last = len(levels) - 1
                while b - 1 > a and levels[min(b - 1, last)] < SILENCE_DB:
                    b -= 1
                while a + 1 < b and levels[min(a, last)] < SILENCE_DB:
                    a += 1
            start, end = a * sec, b * sec
        else:  # a word with no phonemes (e.g. a symbol the front end spoke as nothing)
            prev = words[-1].end - offset if words else frame_starts[1] * sec
            start = end = prev
        words.append(
            WordTimestamp(w.text, offset + float(start), offset + float(end), w.char_start, w.char_end)
        )
    return words


def _shifted(chunk: PhonemeChunk, cut: int, index: int) -> PhonemeChunk:
    """``chunk`` of ``text[cut:]`` as a chunk of ``text``: word spans moved by ``cut``, numbered ``index``."""
    if not cut:
        return chunk if chunk.index == index else replace(chunk, index=index)
    words = tuple(
        replace(w, char_start=w.char_start + cut, char_end=w.char_end + cut) if w.char_start >= 0 else w
        for w in chunk.words
    )
    return replace(chunk, words=words, index=index)


class _Lookahead:
    """An iterator that can tell whether it is exhausted (by fetching the next item only when asked)."""

    _EMPTY = object()

    def __init__(self, items: Iterable[PhonemeChunk]) -> None:
        self._items = iter(items)
        self._next: object = self._EMPTY

    def __iter__(self) -> _Lookahead:
        return self

    def __next__(self) -> PhonemeChunk:
        if self._next is self._EMPTY:
            return next(self._items)
        item, self._next = self._next, self._EMPTY
        if item is None:
            raise StopIteration
        return item  # type: ignore[return-value]

    def at_end(self) -> bool:
        if self._next is self._EMPTY:
            self._next = next(self._items, None)
        return self._next is None


class Pipeline:
    """Speak text with a Kokoro model. ``engine`` is any :class:`koel.backends.Engine`.

    >>> pipe = Pipeline(voice="af_heart")           # doctest: +SKIP
    >>> utt = pipe.synthesize("Hello there.")      # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        voice: str | Voice | None = None,
        lang: str | None = None,
        voices: VoiceStore | None = None,
        frontend: object | None = None,
        options: SynthesisOptions | None = None,
        device: str | None = None,
        batch_size: int = 4,
    ) -> None:
        if engine is None:
            from koel.backends.auto import default_engine

            engine = default_engine(device=device)
        self.engine = engine
        self.voices = voices or VoiceStore()
        self.options = options or SynthesisOptions()
        self.batch_size = batch_size
        self.voice_note: str | None = None
        self.voice = self._resolve_default(voice) if not isinstance(voice, Voice) else voice
        self.lang = lang
        self._priors: OrderedDict[tuple[str, str], TilePrior | None] = OrderedDict()
        self._priors_lock = threading.Lock()
        self._frontends: dict[tuple[str, bool], object] = {}
        if frontend is not None:
            self._frontends[(getattr(frontend, "lang", lang or "a"), False)] = frontend
            self._fixed_frontend = frontend
        else:
            self._fixed_frontend = None

    # -- voices and languages -----------------------------------------------------------------------

    def _resolve_default(self, voice: str | None) -> Voice:
        if voice is not None:
            return self.voices.get(voice)
        try:
            return self.voices.get(DEFAULT_VOICE)
        except VoiceError:
            fallback = self.voices.get(BUNDLED_FALLBACK_VOICE)
            self.voice_note = (
                f"voice {DEFAULT_VOICE} not found offline; using the bundled voice {BUNDLED_FALLBACK_VOICE}. "
                f"Get {DEFAULT_VOICE}.pt from {'hexgrad/Kokoro-82M'} (voices/) into KOEL_VOICES_DIR, or go online."
            )
            log.warning(self.voice_note)
            return fallback

    def get_voice(self, voice: str | Voice | None) -> Voice:
        return self.voice if voice is None else self.voices.get(voice)

    def language_for(self, voice: Voice, lang: str | None) -> str:
        from koel.text import resolve_language

        if lang:
            return resolve_language(lang)
        if self.lang:
            return resolve_language(self.lang)
        first = voice.name.split("+")[0].split(",")[0].split(":")[0]
        return voice_language(first) or "a"

    def frontend(self, lang: str):  # -> koel.text.FrontEnd
        if self._fixed_frontend is not None:
            return self._fixed_frontend
        key = (lang, True)
        if key not in self._frontends:
            from koel.text import FrontEnd

            self._frontends[key] = FrontEnd(lang)
        return self._frontends[key]

    # -- synthesis --------------------------------------------------------------------------------

    def chunks(
        self,
        text: str,
        *,
        lang: str,
        raw_phonemes: bool = False,
        first_chunk_phonemes: int = 0,
        chunk_phonemes: int = MAX_PHONEMES,
    ) -> Iterator[PhonemeChunk]:
        """The front end's chunks: the first at most ``first_chunk_phonemes`` (0: no separate limit),
        each next one at most twice the limit of the one before, up to ``chunk_phonemes``. Limits
        apply to front ends whose ``chunks`` takes ``max_phonemes`` (koel's own); word spans always
        point into ``text``.

        The limits ramp up because a chunk's text side and decoder run whole before its first audio:
        after a 3 s first chunk, a second chunk of 510 phonemes (25 s of speech) kept a streaming
        listener waiting 0.5 s for it on the 2-core bench machine (bench/speed.py, ttfa stalls)."""
        frontend = self.frontend(lang)
        if not _sized(frontend):
            yield from frontend.chunks(text, raw_phonemes=raw_phonemes)
            return
        limit, cut, index = first_chunk_phonemes or chunk_phonemes, 0, 0
        while limit < chunk_phonemes:
            head = iter(frontend.chunks(text[cut:], raw_phonemes=raw_phonemes, max_phonemes=limit))
            chunk = next(head, None)
            if chunk is None:
                return
            yield _shifted(chunk, cut, index)
            end = max((w.char_end for w in chunk.words if w.char_end >= 0), default=-1)
            if end < 0:  # offsets unknown: keep this chunking for the rest
                for i, later in enumerate(head, start=index + 1):
                    yield _shifted(later, cut, i)
                return
            cut, index, limit = cut + end, index + 1, min(chunk_phonemes, 2 * limit)
        rest = frontend.chunks(text[cut:], raw_phonemes=raw_phonemes, max_phonemes=chunk_phonemes)
        for i, later in enumerate(rest, start=index):
            yield _shifted(later, cut, i)

    def _request(self, chunk: PhonemeChunk, voice: Voice, speed: float) -> EngineRequest:
        """The engine's input for ``chunk``; every chunk after the first is marked long-form."""
        ids = with_boundaries(VOCAB[c] for c in chunk.phonemes if c in VOCAB)
        style = voice.row(len(chunk.phonemes)).reshape(-1).numpy()
        return EngineRequest(ids=tuple(ids), style=style, speed=speed, long_form=chunk.index > 0)

    def tile_prior(self, voice: str | Voice | None = None, lang: str | None = None) -> TilePrior | None:
        """The AdaIN statistics that start ``voice``'s tiled first chunks in :meth:`pieces`, made once
        per voice and language (the language's :data:`CALIBRATION_TEXT` synthesised whole; about the
        cost of that sentence's synthesis) and kept; None where the engine cannot stream from a prior
        or the front end cannot read the calibration sentence.

        The prior depends only on the voice and language, never on earlier requests, so the same
        text always gives the same audio.
        """
        make = getattr(self.engine, "tile_prior", None)
        if make is None:
            return None
        v = self.get_voice(voice)
        lang = self.language_for(v, lang)
        key = (hashlib.sha256(v.pack.detach().cpu().numpy().tobytes()).hexdigest(), lang)
        with self._priors_lock:
            if key in self._priors:
                self._priors.move_to_end(key)
                return self._priors[key]
        prior: TilePrior | None = None
        try:
            phonemes = self.frontend(lang).phonemize(CALIBRATION_TEXT.get(lang, CALIBRATION_TEXT["a"]))
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            log.warning("no tile prior for voice %s (%s): calibration text unreadable: %s", v.name, lang, exc)
        else:
            ids = with_boundaries(VOCAB[c] for c in phonemes if c in VOCAB)
            style = v.row(len(phonemes)).reshape(-1).numpy()
            prior = make(EngineRequest(ids=tuple(ids), style=style))
        with self._priors_lock:
            self._priors[key] = prior
            while len(self._priors) > PRIOR_CACHE_SIZE:
                self._priors.popitem(last=False)
        return prior

    def warm_up(self, voice: str | Voice | None = None) -> None:
        """Run everything a first request would set up: one short synthesis and the voice's tile prior."""
        self.synthesize("Warming up.", voice=voice)
        if getattr(self.engine, "stream", None) is not None:
            self.tile_prior(voice)

    def _pause(self, chunk: PhonemeChunk, last: bool, options: SynthesisOptions) -> float:
        if last:
            return 0.0
        if chunk.paragraph_end:
            return options.paragraph_pause
        return options.sentence_pause if chunk.sentence_end else options.clause_pause

    def _assemble(
        self,
        chunk: PhonemeChunk,
        result: EngineResult,
        voice: Voice,
        offset: float,
        last: bool,
        options: SynthesisOptions,
    ) -> AudioChunk:
        pause = round(self._pause(chunk, last, options) * SAMPLE_RATE)
        audio = result.audio.astype(np.float32, copy=False)
        if pause:
            audio = np.concatenate([audio, np.zeros(pause, dtype=np.float32)])
        return AudioChunk(
            audio=audio,
            text=chunk.text,
            phonemes=chunk.phonemes,
            durations=result.durations,
            words=word_timestamps(chunk, result.durations, offset, audio),
            offset=offset,
            index=chunk.index,
            voice=voice.name,
        )

    def stream(
        self,
        text: str,
        *,
        voice: str | Voice | None = None,
        lang: str | None = None,
        speed: float | None = None,
        raw_phonemes: bool = False,
        options: SynthesisOptions | None = None,
        skip_chunks: int = 0,
        batch_size: int = 1,
    ) -> Iterator[AudioChunk]:
        """Yield one AudioChunk per front-end chunk as soon as it is synthesised.

        ``skip_chunks`` resumes an interrupted job (those chunks are not synthesised; offsets of
        later chunks are then relative to the resume point). ``batch_size`` > 1 synthesises that
        many chunks per engine call (more throughput, later first audio).
        """
        options, v, source = self._plan(text, voice, lang, speed, raw_phonemes, options)
        offset = 0.0
        pending: list[PhonemeChunk] = []
        for chunk in source:
            if chunk.index < skip_chunks:
                continue
            pending.append(chunk)
            if len(pending) < batch_size and not source.at_end():
                continue
            results = self.engine.run([self._request(c, v, options.speed) for c in pending])
            for i, (c, r) in enumerate(zip(pending, results, strict=False)):
                last = i == len(pending) - 1 and source.at_end()  # asked after synthesis: no wait for G2P
                out = self._assemble(c, r, v, offset, last, options)
                offset += len(out.audio) / SAMPLE_RATE
                yield out
            pending = []

    def pieces(
        self,
        text: str,
        *,
        voice: str | Voice | None = None,
        lang: str | None = None,
        speed: float | None = None,
        raw_phonemes: bool = False,
        options: SynthesisOptions | None = None,
        first_tile_frames: int | None = None,
        tile_growth: float | None = None,
    ) -> Iterator[AudioPiece]:
        """Yield audio as soon as it is made: the lowest-latency way to play or pipe speech.

        The chunks are those of :meth:`stream`. On engines that stream (the default ``fast``
        engine), the first chunk's generator runs in time tiles, the first of ``first_tile_frames``
        frames (80 per second) and each next ``tile_growth`` times longer (defaults
        :data:`FIRST_TILE_FRAMES` and :data:`TILE_GROWTH`, or the ``UNPRIMED_`` ones without a
        :meth:`tile_prior`), so the first audio is ready after a fraction of the chunk's compute
        and every tile is made while earlier ones play; later chunks stream in the engine's own tiles. Tiled audio approximates
        :meth:`stream`'s (AdaIN statistics over the voice's prior and the tiles so far;
        bench/speed.py measures both). Other engines yield each chunk whole.

        The first call for a voice first makes its tile prior (:meth:`tile_prior`; a server does it
        at start for its default voice, :meth:`warm_up`).
        """
        options, v, source = self._plan(text, voice, lang, speed, raw_phonemes, options)
        stream = getattr(self.engine, "stream", None)
        first: dict[str, object] = {}
        if stream is not None:
            prior = self.tile_prior(v, self.language_for(v, lang))
            if prior is None:
                first = {
                    "first_frames": first_tile_frames or UNPRIMED_FIRST_TILE_FRAMES,
                    "growth": tile_growth or UNPRIMED_TILE_GROWTH,
                }
            else:
                first = {
                    "first_frames": first_tile_frames or FIRST_TILE_FRAMES,
                    "growth": tile_growth or TILE_GROWTH,
                    "prior": prior,
                }
        offset = 0.0
        for chunk in source:
            request = self._request(chunk, v, options.speed)
            if stream is None:
                result = self.engine.run([request])[0]
                durations, audio_pieces = result.durations, iter([result.audio])
            else:
                durations, audio_pieces = stream(request, **(first if chunk.index == 0 else {}))
            made = []
            for audio in audio_pieces:
                made.append(audio)
                yield AudioPiece(audio)
            speech = np.concatenate(made)
            last = source.at_end()  # the next chunk's G2P runs after this chunk's audio is out
            whole = self._assemble(chunk, EngineResult(speech, durations), v, offset, last, options)
            offset += len(whole.audio) / SAMPLE_RATE
            yield AudioPiece(whole.audio[len(speech) :], whole)

    def _plan(
        self,
        text: str,
        voice: str | Voice | None,
        lang: str | None,
        speed: float | None,
        raw_phonemes: bool,
        options: SynthesisOptions | None,
    ) -> tuple[SynthesisOptions, Voice, _Lookahead]:
        """What :meth:`stream` and :meth:`pieces` share: the options, the voice and its chunks."""
        options = options or self.options
        if speed is not None:
            options = replace(options, speed=speed)
        v = self.get_voice(voice)
        chunks = self.chunks(
            text,
            lang=self.language_for(v, lang),
            raw_phonemes=raw_phonemes,
            first_chunk_phonemes=options.first_chunk_phonemes,
        )
        return options, v, _Lookahead(chunks)

    def synthesize(self, text: str, **kwargs) -> Utterance:
        """The whole utterance at once (chunks computed in padded batches of ``batch_size``)."""
        kwargs.setdefault("batch_size", self.batch_size)
        chunks = list(self.stream(text, **kwargs))
        audio = np.concatenate([c.audio for c in chunks]) if chunks else np.zeros(0, dtype=np.float32)
        return Utterance(audio=audio, words=[w for c in chunks for w in c.words], chunks=chunks)

    def phonemize(self, text: str, lang: str = "a") -> str:
        from koel.text import resolve_language

        return self.frontend(resolve_language(lang)).phonemize(text)
