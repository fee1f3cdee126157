"""Reference recordings: good input passes, every kind of bad input fails with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from koel.clone import ReferenceAudioError, load_reference, prepare_reference
from koel.clone.audio_input import check_total_speech

from .conftest import RATE, babble


def test_speechlike_audio_passes(speechlike):
    clip = prepare_reference(speechlike, RATE, name="ok")
    assert clip.warnings == []
    assert 4.0 < clip.speech_seconds <= 6.0
    trimmed = clip.speech_audio()
    assert 0.5 * len(speechlike) < len(trimmed) <= len(speechlike)


def test_silence_is_refused():
    with pytest.raises(ReferenceAudioError, match="silent"):
        prepare_reference(np.zeros(RATE * 5, dtype=np.float32), RATE, name="quiet.wav")
    with pytest.raises(ReferenceAudioError, match="silent"):
        prepare_reference(np.random.default_rng(0).normal(0, 1e-4, RATE * 5), RATE, name="hiss.wav")


def test_noise_is_not_speech():
    noise = np.random.default_rng(1).normal(0, 0.1, RATE * 5).astype(np.float32)
    with pytest.raises(ReferenceAudioError, match="does not sound like speech"):
        prepare_reference(noise, RATE, name="noise.wav")


def test_music_like_tones_are_refused():
    t = np.arange(RATE * 5) / RATE
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    with pytest.raises(ReferenceAudioError, match="held tone or music"):
        prepare_reference(chord.astype(np.float32), RATE, name="chord.wav")


def test_one_second_is_too_short(speechlike):
    clip = prepare_reference(babble(1.4, seed=3), RATE, name="short.wav")
    with pytest.raises(ReferenceAudioError, match="at least 3 s"):
        check_total_speech([clip])
    with pytest.raises(ReferenceAudioError, match="speech"):
        prepare_reference(speechlike[: RATE // 2], RATE, name="half.wav")


def test_short_but_usable_warns(speechlike):
    clip = prepare_reference(speechlike, RATE)
    assert any("approximate" in w for w in check_total_speech([clip]))


def test_stereo_is_mixed_down_with_a_warning(speechlike):
    stereo = np.stack([speechlike, 0.5 * speechlike], axis=1)
    clip = prepare_reference(stereo, RATE, name="stereo.wav")
    assert clip.audio.ndim == 1
    assert any("mono" in w for w in clip.warnings)
    np.testing.assert_allclose(clip.audio, 0.75 * speechlike, atol=1e-6)


def test_other_rates_are_resampled(speechlike):
    from koel.audio import resample

    at_16k = resample(speechlike, RATE, 16_000)
    clip = prepare_reference(at_16k, 16_000)
    assert abs(len(clip.audio) - len(speechlike)) <= 2
    narrow = prepare_reference(resample(speechlike, RATE, 11_025), 11_025, name="phone.wav")
    assert any("narrowband" in w for w in narrow.warnings)
    with pytest.raises(ReferenceAudioError, match="sample rate 4000 Hz is too low"):
        prepare_reference(resample(speechlike, RATE, 4_000), 4_000)


def test_integer_and_bad_values(speechlike):
    as_int = (speechlike * 32767).astype(np.int16)
    clip = prepare_reference(as_int, RATE)
    np.testing.assert_allclose(clip.audio, speechlike, atol=1e-4)
    broken = speechlike.copy()
    broken[100] = np.nan
    with pytest.raises(ReferenceAudioError, match="NaN"):
        prepare_reference(broken, RATE)
    with pytest.raises(ReferenceAudioError, match="wrong scaling"):
        prepare_reference(speechlike * 100, RATE)
    with pytest.raises(ReferenceAudioError, match="empty"):
        prepare_reference(np.zeros(0, dtype=np.float32), RATE)


def test_files(write_wav, tmp_path, speechlike):
    from koel.audio import resample

    clip = load_reference(write_wav("a.wav", resample(speechlike, RATE, 22_050), rate=22_050))
    assert clip.name == "a.wav"
    assert abs(clip.seconds - len(speechlike) / RATE) < 0.01
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(100))
    with pytest.raises(ReferenceAudioError, match="cannot read"):
        load_reference(corrupt)
    with pytest.raises(ReferenceAudioError, match="does not exist"):
        load_reference(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(ReferenceAudioError, match="cannot read"):
        load_reference(text)


def test_clipping_warns(speechlike):
    loud = np.clip(speechlike * 8, -1, 1)
    clip = prepare_reference(loud, RATE)
    assert any("clipped" in w for w in clip.warnings)


def test_stereo_file_at_another_rate(write_wav, speechlike):
    """A 44.1 kHz stereo file is mixed down and resampled to 24 kHz, with a warning for the mixing."""
    from koel.audio import resample

    at_44k = resample(speechlike, RATE, 44_100)
    clip = load_reference(write_wav("stereo.wav", np.stack([at_44k, at_44k], axis=1), rate=44_100))
    assert clip.audio.ndim == 1 and clip.audio.dtype == np.float32
    assert abs(clip.seconds - len(speechlike) / RATE) < 0.01
    assert any("mono" in w for w in clip.warnings)
    np.testing.assert_allclose(clip.audio[RATE : 2 * RATE], speechlike[RATE : 2 * RATE], atol=0.02)
