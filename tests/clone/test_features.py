"""Pitch tracker, speaker-encoder front end, log-mel and the objective terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koel.clone.objective import LogMel, htk_mel_filterbank, log2_f0_stats, spectral_shape
from koel.clone.pitch import pitch_stats, track_pitch
from koel.clone.speaker import SpeakerEncoder, slaney_mel_filterbank

from .conftest import RATE, babble


@pytest.mark.parametrize("f0", [70.0, 110.0, 180.0, 260.0, 420.0])
def test_yin_finds_the_fundamental_of_a_harmonic_tone(f0):
    t = np.arange(RATE) / RATE
    # weak fundamental, strong 2nd/3rd harmonics: the classic octave-error trap
    tone = (
        0.3 * np.sin(2 * np.pi * f0 * t) + 0.6 * np.sin(4 * np.pi * f0 * t) + 0.4 * np.sin(6 * np.pi * f0 * t)
    )
    track = track_pitch(tone)
    voiced = track.f0[track.voiced]
    assert track.voiced.mean() > 0.9
    assert abs(np.median(voiced) / f0 - 1) < 0.01, f"median {np.median(voiced):.1f} Hz for {f0} Hz"


def test_yin_follows_a_glide_and_rejects_noise():
    t = np.arange(2 * RATE) / RATE
    hz = 150 * 2 ** (t / 2)  # one octave up over 2 s
    tone = np.sin(2 * np.pi * np.cumsum(hz) / RATE)
    track = track_pitch(tone)
    frames = np.arange(len(track.f0)) * track.frame_seconds
    expected = 150 * 2 ** (np.clip(frames, 0, 2) / 2)
    ok = track.voiced & (frames > 0.05) & (frames < 1.95)
    assert np.max(np.abs(track.f0[ok] / expected[ok] - 1)) < 0.02
    noise = np.random.default_rng(0).normal(0, 0.2, RATE)
    assert track_pitch(noise).voiced.mean() < 0.05


def test_pitch_stats_ignore_octave_errors():
    f0 = np.full(200, 200.0)
    f0[:10] = 100.0  # octave-down errors
    f0[190:] = 300.0  # over half an octave up: a tracking error
    f0[10:20] = 0.0  # unvoiced
    stats = pitch_stats(f0)
    assert stats.median_hz == pytest.approx(200.0)
    assert stats.log2_std == pytest.approx(0.0, abs=1e-9)
    assert stats.voiced_frames == 170


def test_slaney_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ours = slaney_mel_filterbank(16_000, 400, 40, 0.0, 8_000.0)
    ref = librosa.filters.mel(sr=16_000, n_fft=400, n_mels=40)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


def test_htk_filterbank_shape_and_coverage():
    fb = htk_mel_filterbank(1025, 80, 16_000)
    assert fb.shape == (1025, 80)
    assert bool((fb >= 0).all())
    peaks = fb.argmax(dim=0)
    assert bool((peaks[1:] >= peaks[:-1]).all()), "filters must be ordered by frequency"


def test_speaker_encoder_matches_resemblyzer():
    """Same features and embedding as the Resemblyzer package (16 kHz path and 24 kHz path)."""
    pytest.importorskip("resemblyzer")
    try:
        from resemblyzer import VoiceEncoder
        from resemblyzer.audio import wav_to_mel_spectrogram
    except ImportError as exc:  # its audio module needs webrtcvad
        pytest.skip(f"resemblyzer's audio module is not importable: {exc}")
    from koel.audio import resample

    wav16 = resample(babble(4.0, seed=5), RATE, 16_000)
    ours16 = SpeakerEncoder.pretrained(16_000)
    ref_mel = wav_to_mel_spectrogram(wav16)
    our_mel = ours16.mel(torch.from_numpy(wav16)[None])[0].numpy()
    np.testing.assert_allclose(our_mel, ref_mel, rtol=1e-3, atol=1e-4 * ref_mel.max())
    ref = VoiceEncoder("cpu", verbose=False).embed_utterance(wav16)
    assert float(ours16.embed_utterance(wav16) @ torch.from_numpy(ref)) > 0.9999
    ours24 = SpeakerEncoder.pretrained(RATE)
    cos = float(ours24.embed_utterance(resample(wav16, 16_000, RATE)) @ torch.from_numpy(ref))
    assert cos > 0.999, f"24 kHz front end drifts from the 16 kHz one: cosine {cos:.5f}"


def test_speaker_encoder_is_differentiable_and_volume_invariant():
    enc = SpeakerEncoder.pretrained()
    audio = (0.02 * torch.from_numpy(babble(1.6, seed=2)))[None].requires_grad_(True)
    emb = enc(audio)
    assert emb.shape == (1, 256)
    assert float(emb.detach().norm()) == pytest.approx(1.0, abs=1e-5)
    emb[0, :10].sum().backward()
    assert audio.grad is not None and float(audio.grad.abs().sum()) > 0
    # both are quieter than -30 dBFS and are raised to it, as Resemblyzer does
    quieter = enc(audio.detach() * 0.1)
    assert float((quieter * emb.detach()).sum()) > 0.9999


def test_logmel_and_spectral_shape():
    logmel = LogMel()
    x = torch.from_numpy(babble(2.0, seed=4))[None]
    m = logmel(x)
    assert m.shape == (1, 80, x.shape[1] // 300 + 1)
    shape = spectral_shape(m[0])
    assert abs(float(shape.mean())) < 1e-5
    louder = spectral_shape(logmel(4 * x)[0])
    assert float((louder - shape).abs().max()) < 0.02, "level must not change the spectral shape"
    bright = torch.from_numpy(babble(2.0, seed=4, f0=400.0))[None]
    assert float((spectral_shape(logmel(bright)[0]) - shape).abs().mean()) > 0.05


def test_f0_stats_are_differentiable_over_voiced_steps():
    f0 = torch.tensor([[0.0, 0.0, 180.0, 200.0, 222.0, 0.0, 150.0, 400.0]], requires_grad=True)
    energy = torch.tensor([[0.0, 0.0, 5.0, 5.0, 5.0, 0.0, -2.0, 5.0]])
    mean, std = log2_f0_stats(f0, energy)  # 150 Hz is too quiet, 400 Hz an octave jump
    logs = np.log2([180.0, 200.0, 222.0])
    assert float(mean.detach()) == pytest.approx(logs.mean(), rel=1e-5)
    assert float(std.detach()) == pytest.approx(logs.std(ddof=1), rel=1e-4)
    (mean + std).backward()
    assert f0.grad is not None
    assert [float(g) != 0.0 for g in f0.grad[0]] == [False, False, True, True, True, False, False, False]
