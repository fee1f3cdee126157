"""Targets on Kokoro's grids: lengths, mel filterbank, energy definition, Praat F0 on a known tone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koel.constants import SAMPLE_RATE
from koel.train.features import (
    energy_from_mel,
    extract_features,
    load_audio,
    mel_filterbank,
    pad_to_frames,
    pitch,
    styletts2_mel,
)


def _tone(f0: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 4))).astype(np.float32)


def test_targets_share_the_2f_grid():
    feats = extract_features(_tone(150.0, 1.013))
    frames = feats.frames
    assert feats.audio.shape[-1] == 600 * frames and frames == 41  # padded up to whole frames
    assert feats.mel.shape == (80, 2 * frames)
    assert feats.f0.shape == feats.energy.shape == (2 * frames,)


@pytest.mark.parametrize("f0", [110.0, 220.0, 330.0])
def test_pitch_of_a_harmonic_tone(f0):
    track = pitch(_tone(f0, 0.8))
    voiced = track[track > 0]
    assert len(voiced) > 0.8 * len(track), f"only {len(voiced)} of {len(track)} steps voiced"
    assert np.median(voiced) == pytest.approx(f0, rel=0.02)


def test_silence_is_unvoiced():
    assert (pitch(np.zeros(SAMPLE_RATE, dtype=np.float32)) == 0).all()


def test_filterbank_is_triangular_and_covers_the_range():
    fb = mel_filterbank(2048, 80, 16_000)
    assert fb.shape == (1025, 80)
    assert float(fb.max()) <= 1.0 + 1e-6
    peaks = fb.argmax(0)
    assert bool((peaks[1:] >= peaks[:-1]).all()), "filters must be ordered by frequency"
    assert int(peaks[-1]) > 900  # the 16 kHz labelling quirk spreads the 80 bins over all 1025 bins


def test_energy_is_log_norm_of_linear_mel():
    audio = torch.from_numpy(pad_to_frames(_tone(200.0, 0.5)))
    mel = styletts2_mel(audio)
    louder = styletts2_mel(2 * audio)
    # doubling the amplitude multiplies power by 4: log-norm rises by log 4 (where the floor is negligible)
    diff = energy_from_mel(louder) - energy_from_mel(mel)
    assert float(diff.median()) == pytest.approx(np.log(4.0), abs=0.01)


def test_load_audio_resamples_to_24k(tmp_path):
    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(str(path), np.stack([_tone(200, 0.5)[:11025]] * 2, axis=1), 22_050)  # stereo, 22.05 kHz
    audio = load_audio(str(path))
    assert audio.ndim == 1 and len(audio) == 12_000
