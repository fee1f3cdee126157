"""The pipeline: streaming equals one-shot, timestamps, pauses, formats, resumable long jobs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from koel.audio import decode
from koel.backends.fake import FakeEngine
from koel.constants import SAMPLE_RATE
from koel.longform import speak_to_file
from koel.pipeline import Pipeline, SynthesisOptions

TEXT = (
    "The quick brown fox jumps over the lazy dog. It was 9:30am on March 3rd!\n\n"
    "A new paragraph starts here, with a comma, and ends with a question?"
)


@pytest.fixture()
def fake_pipe():
    return Pipeline(FakeEngine(), voice="jf_alpha", lang="a")


def test_stream_equals_one_shot_with_the_real_model(real_engine):
    import torch

    from koel.dsp import log_mel

    pipe = Pipeline(real_engine, voice="jf_alpha", lang="a")
    streamed = list(pipe.stream(TEXT))
    whole = pipe.synthesize(TEXT, batch_size=4)  # padded batches through the model
    assert len(streamed) >= 2
    assert [c.durations.tolist() for c in streamed] == [c.durations.tolist() for c in whole.chunks]
    joined = np.concatenate([c.audio for c in streamed])
    assert joined.shape == whole.audio.shape
    # Not bit-equal: the source's STFT phase of bins that are numerically zero can flip between
    # +pi and -pi when float sums run in another order (batched kernels), which the generator
    # hears as a slightly different excitation. The spectrum must still be the same.
    a = log_mel(torch.from_numpy(joined)[None]).numpy().ravel()
    b = log_mel(torch.from_numpy(whole.audio)[None]).numpy().ravel()
    corr = float(np.corrcoef(a, b)[0, 1])
    assert corr > 0.9995, f"log-mel correlation {corr}"
    assert [w.word for w in whole.words] == [w.word for c in streamed for w in c.words]


@pytest.fixture(scope="module")
def fast_engine(real_model):
    import copy

    from koel.backends.auto import FastTorchEngine

    return FastTorchEngine(copy.deepcopy(real_model))  # accelerate() changes a model in place


@pytest.fixture(scope="module")
def fp32_fast_engine(fast_engine, real_model):
    """The fast engine in float32 with float32 weights: the default one where that is already so
    (CPUs without native bf16, with ``KOEL_HALF_WEIGHTS=0``), else one more built from the real model."""
    import copy

    import torch

    from koel.backends.auto import FastTorchEngine

    if fast_engine.dtype == torch.float32 and not fast_engine.half_weights:
        return fast_engine
    return FastTorchEngine(copy.deepcopy(real_model), precision="fp32", half_weights=False)


def test_pieces_come_early_and_add_up_to_the_stream(fast_engine):
    import torch

    from koel.dsp import log_mel
    from koel.pipeline import FIRST_TILE_FRAMES

    pipe = Pipeline(fast_engine, voice="jf_alpha", lang="a")
    torch.manual_seed(0)
    chunks = list(pipe.stream(TEXT))
    torch.manual_seed(0)
    pieces = list(pipe.pieces(TEXT))
    assert 0 < len(pieces[0].audio) <= FIRST_TILE_FRAMES * 300 and pieces[0].chunk is None
    finished = [p.chunk for p in pieces if p.chunk is not None]
    assert len(finished) == len(chunks) and len(pieces) > 2 * len(chunks)
    for a, b in zip(finished, chunks, strict=True):
        assert a.durations.tolist() == b.durations.tolist() and len(a.audio) == len(b.audio)
        assert [w.word for w in a.words] == [w.word for w in b.words]
        assert max(abs(x.start - y.start) for x, y in zip(a.words, b.words, strict=True)) < 0.1
    joined = np.concatenate([p.audio for p in pieces])
    assert np.array_equal(joined, np.concatenate([c.audio for c in finished]))
    # tiles normalise over the voice's prior and the audio made so far, not over the whole chunk:
    # close, not equal
    x = log_mel(torch.from_numpy(joined)[None]).numpy().ravel()
    y = log_mel(torch.from_numpy(np.concatenate([c.audio for c in chunks]))[None]).numpy().ravel()
    assert (
        float(np.corrcoef(x, y)[0, 1]) > 0.99
    )  # measured 0.996 (0.98 without a prior); unrelated speech ~0.6
    again = np.concatenate([p.audio for p in pipe.pieces(TEXT)])
    assert np.array_equal(again, joined)  # the prior depends on the voice only: the same audio again


def test_the_servers_scheduled_pieces_are_the_librarys(fast_engine):
    """koel serve runs Pipeline.pieces through its scheduler (engine work in the worker thread,
    pieces handed over one by one): the same tiles, the same prior, the same samples."""
    pytest.importorskip("fastapi")
    import threading

    from koel.serve.batching import JobEngine, Scheduler
    from koel.serve.settings import ServerSettings
    from koel.serve.synthesis import SpeechJob, _produce, _RequestPipeline

    text = TEXT
    pipe = Pipeline(fast_engine, voice="af_heart", lang="a")
    settings = ServerSettings()
    lock = threading.Lock()
    direct = list(_RequestPipeline(pipe, fast_engine, lock, settings).pieces(text))
    want = np.concatenate([p.audio for p in direct])
    chunks = sum(p.chunk is not None for p in direct)
    scheduler = Scheduler(fast_engine)
    scheduler.start()
    try:
        job = scheduler.open_job(timeout=300)
        view = _RequestPipeline(pipe, JobEngine(scheduler, job), lock, settings)
        served = list(_produce(view, SpeechJob(text, pipe.get_voice("af_heart"), "a", 1.0, "pcm")))
        scheduler.close_job(job)
    finally:
        scheduler.stop(timeout=60)
    assert chunks > 1 and served[-1].tail and len(served) == len(direct) + 1  # + the encoder's tail
    pcm = np.frombuffer(b"".join(p.data for p in served), dtype="<i2")
    np.testing.assert_array_equal(pcm, np.round(np.clip(want, -1, 1) * 32767).astype("<i2"))
    assert scheduler.stats.chunks == chunks and scheduler.stats.whole_streams == 0


def test_a_tiles_last_stage_cut_to_its_reach_changes_nothing_but_statistics(fp32_fast_engine):
    """generate_tiles runs the generator's last stage only on a tile, its crossfades and that stage's
    reach: with the AdaIN statistics pinned (a prior counted a billion times) the audio is the
    untrimmed tiles' to float rounding. In float32 with float32 weights: the cut moves where the
    block-DFT blocks fall, and rounded spectra are each block's filter only to their rounding, so in
    bfloat16 (the default on AVX512-BF16 CPUs) the two differ by about 5e-3 of the RMS, with float16
    weights (the float32 default) by up to 6e-3 (measured: 2e-3 to 6e-3 per tile)."""
    import torch

    from koel.model.fast import TilePrior, stream_tiles

    pipe = Pipeline(fp32_fast_engine, voice="af_heart", lang="a")
    chunk = next(iter(pipe.chunks(TEXT, lang="a")))
    request = pipe._request(chunk, pipe.get_voice(None), 1.0)
    ids, style = torch.tensor([request.ids]), torch.from_numpy(request.style).reshape(1, -1)
    prior = pipe.tile_prior()
    assert prior is not None
    pinned = TilePrior(prior.stats, 1e9)

    def tiled(trim: bool, p: TilePrior) -> np.ndarray:
        tiles = stream_tiles(
            fp32_fast_engine.model, ids, style, first_frames=24, frames=60, growth=1.5, prior=p, trim=trim
        )
        return torch.cat(list(tiles.pieces)).numpy()

    whole, cut = tiled(False, pinned), tiled(True, pinned)
    assert len(whole) == len(cut) > 60 * 300  # more than one tile
    rms = float(np.sqrt(np.mean(whole**2)))
    assert float(np.abs(whole - cut).max()) < 1e-4 * rms, float(np.abs(whole - cut).max())  # measured 8e-7
    # with the prior counted once the last stage's statistics count the frames it computes, so the
    # trim shows (and did run above): close, not equal
    assert float(np.abs(tiled(False, prior) - tiled(True, prior)).max()) > 1e-2 * rms


def test_a_voice_tile_prior_is_made_once_and_kept(fast_engine, monkeypatch, caplog):
    from koel.clone.cache import load_cached
    from koel.model.fast import TilePrior
    from koel.paths import cache_dir

    pipe = Pipeline(fast_engine, voice="af_heart", lang="a")
    prior = pipe.tile_prior()
    assert isinstance(prior, TilePrior) and prior.stats
    assert pipe.tile_prior("af_heart", "a") is prior  # kept per voice and language
    stored = list((cache_dir() / "tiles").glob("prior-*.pt"))
    assert any(_same(load_cached(f), prior.state()) for f in stored)
    # a new pipeline (a new process) reads it back instead of synthesising the calibration again
    calls = []
    monkeypatch.setattr("koel.model.fast.tile_prior", lambda *a, **k: calls.append(1))
    again = Pipeline(fast_engine, voice="af_heart", lang="a").tile_prior()
    assert not calls and again is not None and _same(again.state(), prior.state())
    other = Pipeline(fast_engine, voice="am_adam", lang="a")
    monkeypatch.setattr(other, "frontend", lambda lang: _Unreadable())
    with caplog.at_level("WARNING"):
        assert other.tile_prior() is None  # no calibration: pieces fall back to a longer first tile
    assert "calibration text unreadable" in caplog.text and not calls
    assert Pipeline(FakeEngine(), voice="jf_alpha", lang="a").tile_prior() is None  # cannot stream


class _Unreadable:
    def phonemize(self, text: str) -> str:
        raise ValueError("no G2P for this language here")


def _same(a: dict | None, b: dict) -> bool:
    """Two tile-prior states hold the same statistics."""
    import torch

    return (
        a is not None
        and a["names"] == b["names"]
        and a["counts"] == b["counts"]
        and all(torch.equal(x, y) for x, y in zip(a["means"] + a["m2"], b["means"] + b["m2"], strict=True))
    )


def test_pieces_of_an_engine_that_cannot_stream_are_its_chunks(fake_pipe):
    chunks = list(fake_pipe.stream(TEXT))
    pieces = list(fake_pipe.pieces(TEXT))
    assert np.array_equal(
        np.concatenate([p.audio for p in pieces]), np.concatenate([c.audio for c in chunks])
    )
    assert [p.chunk.text for p in pieces if p.chunk is not None] == [c.text for c in chunks]


def test_low_latency_output_cannot_resume(fake_pipe, tmp_path):
    with pytest.raises(ValueError, match="resume"):
        speak_to_file(fake_pipe, TEXT, tmp_path / "x.wav", resume=True, low_latency=True)


def test_chunks_carry_everything(fake_pipe):
    chunks = list(fake_pipe.stream(TEXT))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    offset = 0.0
    for c in chunks:
        assert c.audio.dtype == np.float32
        assert c.phonemes and c.text
        assert len(c.durations) == len([p for p in c.phonemes]) + 2 or len(c.durations) > 2
        assert c.offset == pytest.approx(offset)
        offset += len(c.audio) / SAMPLE_RATE


def test_word_timestamps_are_ordered_and_inside_the_audio(fake_pipe):
    utt = fake_pipe.synthesize(TEXT)
    spoken = [w for w in utt.words if any(ch.isalnum() for ch in w.word)]
    assert len(spoken) >= 20
    for a, b in itertools.pairwise(spoken):
        assert a.start <= a.end <= b.start + 1e-9
    assert spoken[-1].end <= utt.duration
    for w in spoken:
        assert TEXT[w.char_start : w.char_end] == w.word


def test_word_edges_follow_the_sound_not_only_the_durations():
    """Spans move LEAD_FRAMES earlier and silent edge frames (a word's held last phoneme) are cut."""
    from koel.constants import FRAME_SAMPLES
    from koel.pipeline import LEAD_FRAMES, word_timestamps
    from koel.types import PhonemeChunk, Word

    chunk = PhonemeChunk(
        text="ab cd",
        phonemes="ab cd",
        words=(Word("ab", "ab", 0, 2, 0, 2), Word("cd", "cd", 3, 5, 3, 5)),
    )
    # tokens: BOS, a, b, space, c, d, EOS; "d" is held for 12 frames but only its first 2 sound
    durations = np.array([6, 4, 4, 2, 4, 12, 1])
    frames = np.zeros(int(durations.sum()))
    frames[6 - LEAD_FRAMES : 6 - LEAD_FRAMES + 8] = 1.0  # "ab" sounds three frames early
    frames[16 - LEAD_FRAMES : 16 - LEAD_FRAMES + 6] = 1.0  # "c" and the first two frames of "d"
    audio = np.repeat(frames, FRAME_SAMPLES) * np.sin(np.arange(len(frames) * FRAME_SAMPLES))
    sec = FRAME_SAMPLES / SAMPLE_RATE
    plain = word_timestamps(chunk, durations, offset=1.0)
    assert plain[0].start == pytest.approx(1.0 + (6 - LEAD_FRAMES) * sec)
    assert plain[1].end == pytest.approx(1.0 + (32 - LEAD_FRAMES) * sec)
    trimmed = word_timestamps(chunk, durations, offset=1.0, audio=audio)
    assert trimmed[0].start == pytest.approx(plain[0].start)
    assert trimmed[0].end == pytest.approx(plain[0].end)
    assert trimmed[1].start == pytest.approx(plain[1].start)
    assert trimmed[1].end == pytest.approx(1.0 + (22 - LEAD_FRAMES) * sec)


def test_short_first_chunk_then_normal_chunks():
    """The first chunk is capped (early first audio); every word keeps its source span."""
    text = " ".join(["The keeper climbed the stairs, counted every step, and lit the lamp."] * 12)
    capped = list(Pipeline(FakeEngine(), voice="jf_alpha", lang="a").stream(text))
    uncapped = list(
        Pipeline(
            FakeEngine(), voice="jf_alpha", lang="a", options=SynthesisOptions(first_chunk_phonemes=0)
        ).stream(text)
    )
    assert len(capped[0].phonemes) <= 100 < len(uncapped[0].phonemes)
    # the caps ramp up: 100, 200, 400, then the front end's 510
    limits = [min(510, 100 * 2**k) for k in range(len(capped))]
    assert all(len(c.phonemes) <= limit for c, limit in zip(capped, limits, strict=True))
    assert any(len(c.phonemes) > 100 for c in capped[1:3]) and len(capped) > len(uncapped)
    assert [c.index for c in capped] == list(range(len(capped)))
    words = [w for c in capped for w in c.words]
    assert [w.word for w in words] == [w.word for c in uncapped for w in c.words]
    for w in words:
        assert text[w.char_start : w.char_end] == w.word
    with pytest.raises(ValueError, match="first_chunk_phonemes"):
        SynthesisOptions(first_chunk_phonemes=3)


class _Recording(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def run(self, requests):  # type: ignore[no-untyped-def]
        self.requests.extend(requests)
        return super().run(requests)


def test_chunks_after_the_first_ask_the_engine_for_flat_memory():
    """Later chunks of a text are marked long-form (the fast engine then tiles anything wider than one window)."""
    engine = _Recording()
    text = " ".join(["The keeper climbed the stairs, counted every step, and lit the lamp."] * 12)
    chunks = list(Pipeline(engine, voice="jf_alpha", lang="a").stream(text))
    assert len(chunks) >= 3
    assert [r.long_form for r in engine.requests] == [False] + [True] * (len(chunks) - 1)
    engine.requests.clear()
    Pipeline(engine, voice="jf_alpha", lang="a").synthesize("One short sentence.")
    assert [r.long_form for r in engine.requests] == [False]


def test_paragraph_pause_is_longer_than_sentence_pause():
    options = SynthesisOptions(sentence_pause=0.1, paragraph_pause=0.7)
    pipe = Pipeline(FakeEngine(), voice="jf_alpha", lang="a", options=options)
    chunks = list(pipe.stream("One sentence here. Two sentences here.\n\nThree."))
    assert len(chunks) >= 2

    def trailing_silence(audio: np.ndarray) -> float:
        return (len(audio) - len(np.trim_zeros(audio, "b"))) / SAMPLE_RATE

    paragraph_end = [c for c in chunks if "Two" in c.text]
    assert paragraph_end and trailing_silence(paragraph_end[0].audio) >= 0.69
    assert trailing_silence(chunks[-1].audio) < 0.01  # nothing after the last chunk
    sentence_end = [c for c in chunks if "One" in c.text and "Two" not in c.text]
    if sentence_end:  # the front end may keep both sentences in one chunk
        assert 0.09 <= trailing_silence(sentence_end[0].audio) < 0.3


def test_speed_and_bad_options(fake_pipe):
    slow = fake_pipe.synthesize("Hello there friend.", speed=0.5).duration
    fast = fake_pipe.synthesize("Hello there friend.", speed=2.0).duration
    assert fast < slow
    with pytest.raises(ValueError, match="speed"):
        SynthesisOptions(speed=0)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "pcm"])
def test_every_format_decodes_back(tmp_path, real_engine, fmt):
    pipe = Pipeline(real_engine, voice="jf_alpha", lang="a")
    target = tmp_path / f"out.{fmt}"
    result = speak_to_file(pipe, "Formats are easy. Two short sentences.", target, progress=False)
    audio, rate = decode(target)
    assert rate == SAMPLE_RATE
    assert abs(len(audio) / rate - result.seconds) < 0.05, (fmt, len(audio) / rate, result.seconds)


def test_interrupted_job_resumes_without_redoing_chunks(tmp_path):
    text = "\n\n".join(f"Paragraph number {i} is here." for i in range(12))
    reference = tmp_path / "reference.wav"
    speak_to_file(Pipeline(FakeEngine(), voice="jf_alpha", lang="a"), text, reference, progress=False)

    target = tmp_path / "book.wav"
    crashing = FakeEngine(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        speak_to_file(
            Pipeline(crashing, voice="jf_alpha", lang="a"), text, target, resume=True, progress=False
        )
    assert (tmp_path / "book.wav.koel-partial" / "job.json").exists()

    second = FakeEngine()
    result = speak_to_file(
        Pipeline(second, voice="jf_alpha", lang="a"), text, target, resume=True, progress=False
    )
    assert result.resumed_from == 5
    assert second.utterances == result.chunks
    assert not (tmp_path / "book.wav.koel-partial").exists()
    a, _ = decode(target)
    b, _ = decode(reference)
    assert a.shape == b.shape and np.abs(a - b).max() < 2e-4
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and len(result.words) >= 12 * 4


def test_changed_text_does_not_reuse_a_stale_journal(tmp_path):
    target = tmp_path / "a.wav"
    with pytest.raises(RuntimeError):
        speak_to_file(
            Pipeline(FakeEngine(fail_after=2), voice="jf_alpha", lang="a"),
            "One.\n\nTwo.\n\nThree.\n\nFour.",
            target,
            resume=True,
            progress=False,
        )
    result = speak_to_file(
        Pipeline(FakeEngine(), voice="jf_alpha", lang="a"),
        "Other text. Entirely.",
        target,
        resume=True,
        progress=False,
    )
    assert result.resumed_from == 0


def test_unknown_voice_is_a_clear_error():
    from koel.voices import VoiceError

    with pytest.raises(VoiceError, match="nonexistent_voice"):
        Pipeline(FakeEngine(), voice="nonexistent_voice")
    with pytest.raises(VoiceError, match="invalid voice name"):
        Pipeline(FakeEngine(), voice="../../etc/passwd")


def test_default_voice_falls_back_to_the_bundled_one(tmp_path, monkeypatch):
    from koel.voices import VoiceStore

    monkeypatch.setenv("KOEL_CACHE_DIR", str(tmp_path))
    pipe = Pipeline(FakeEngine(), voices=VoiceStore(tmp_path / "empty", allow_download=False))
    assert pipe.voice.name == "jf_alpha"
    assert pipe.voice_note and "af_heart" in pipe.voice_note
