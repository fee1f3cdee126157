"""The fast path and the ONNX export on the real Kokoro-82M weights (needs ../shared voices)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from koel.export.onnx_export import spectral_error
from koel.model import native
from koel.model.fast import FastLinear, accelerate, holds_half_weights, int8_linear_available
from koel.tokenizer import encode, with_boundaries

PHONEMES = "ðə lˈIbɹˌɛɹi ˈOpᵊnz ˈɜɹli ˌɔn wˈikdˌAz ænd klˈOzᵻz lˈAt ˌɔn fɹˈIdˌAz."


@pytest.fixture(scope="module")
def sentence(shared_voices):
    from koel.voices import VoiceStore

    voice = VoiceStore(shared_voices).get("af_heart")
    return torch.tensor([with_boundaries(encode(PHONEMES))]), voice.row(len(PHONEMES)).reshape(1, -1)


@pytest.mark.parametrize(
    ("precision", "half_weights", "bound"),
    [("fp32", False, 0.05), ("fp32", True, 0.05), ("bf16", False, 0.3)],
)
def test_fast_path_sounds_like_the_reference(real_model, sentence, precision, half_weights, bound):
    ids, style = sentence
    ref = real_model.synthesize(ids, style)
    model = copy.deepcopy(real_model)
    accelerate(model, precision, int8_text=False, half_weights=half_weights)
    assert holds_half_weights(model) == (half_weights and native.mix_available())
    out = model.synthesize(ids, style)
    assert torch.equal(out.durations, ref.durations)  # the text side is untouched
    err = spectral_error(ref.audio[0].numpy(), out.audio[0].numpy())
    assert err < bound, f"{precision}: spectral error {err:.4f}"
    rms = [float(np.sqrt(np.mean(a[0].numpy() ** 2))) for a in (ref.audio, out.audio)]
    assert abs(rms[0] - rms[1]) < 0.02 * rms[0], rms


@pytest.mark.skipif(not int8_linear_available(), reason="PyTorch's int8 linear (FBGEMM) is x86 only")
def test_embedded_weights_run_pl_bert_in_int8_with_nearly_the_same_durations(real_model, sentence):
    """The embedded weights come from the int8 export, so PL-BERT's products run in int8 by default."""
    ids, style = sentence
    models = {}
    for int8 in (False, True):
        models[int8] = copy.deepcopy(real_model)
        accelerate(models[int8], "fp32", int8_text=int8)
    linears = [m for m in models[True].bert.modules() if isinstance(m, FastLinear)]
    assert len(linears) == 7 and all(m.int8 is not None for m in linears)
    with torch.no_grad():
        hidden = {k: m.bert(ids) for k, m in models.items()}
        durations = {k: m.synthesize(ids, style).durations[0] for k, m in models.items()}
    error = float((hidden[True] - hidden[False]).norm() / hidden[False].norm())
    assert 1e-4 < error < 0.15, error  # 8-bit activations over 12 passes of the shared layer
    change = (durations[True] - durations[False]).abs()
    assert int(change.max()) <= 2 and float((change > 0).float().mean()) <= 0.1, change.tolist()
    totals = [int(d.sum()) for d in durations.values()]
    assert abs(totals[0] - totals[1]) <= 0.02 * totals[0], totals
