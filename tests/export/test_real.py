"""The fast path and the ONNX export on the real Kokoro-82M weights (needs ../shared voices)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from koel.export.onnx_export import spectral_error
from koel.model.fast import accelerate
from koel.tokenizer import encode, with_boundaries

PHONEMES = "ðə lˈIbɹˌɛɹi ˈOpᵊnz ˈɜɹli ˌɔn wˈikdˌAz ænd klˈOzᵻz lˈAt ˌɔn fɹˈIdˌAz."


@pytest.fixture(scope="module")
def sentence(shared_voices):
    from koel.voices import VoiceStore

    voice = VoiceStore(shared_voices).get("af_heart")
    return torch.tensor([with_boundaries(encode(PHONEMES))]), voice.row(len(PHONEMES)).reshape(1, -1)


@pytest.mark.parametrize(("precision", "bound"), [("fp32", 0.05), ("bf16", 0.3)])
def test_fast_path_sounds_like_the_reference(real_model, sentence, precision, bound):
    ids, style = sentence
    ref = real_model.synthesize(ids, style)
    model = copy.deepcopy(real_model)
    accelerate(model, precision)
    out = model.synthesize(ids, style)
    assert torch.equal(out.durations, ref.durations)  # the text side is untouched
    err = spectral_error(ref.audio[0].numpy(), out.audio[0].numpy())
    assert err < bound, f"{precision}: spectral error {err:.4f}"
    rms = [float(np.sqrt(np.mean(a[0].numpy() ** 2))) for a in (ref.audio, out.audio)]
    assert abs(rms[0] - rms[1]) < 0.02 * rms[0], rms
