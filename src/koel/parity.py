"""Stage-by-stage comparison of koel's model with the official int8 export (onnxruntime).

Used by the parity tests and ``bench/parity.py``. Each stage is compared on the reference's own
inputs where that matters: F0/energy and audio are computed with the export's durations forced, so
a one-frame rounding difference in one token does not shift everything after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from koel.constants import ONNX_AUDIO_GAIN
from koel.dsp import log_mel
from koel.model import KokoroModel
from koel.reference import OfficialOnnxReference

STAGES = (
    "albert",
    "bert_encoder",
    "duration_encoder",
    "durations",
    "f0",
    "energy",
    "text_encoder",
    "log_mel",
)


@dataclass(frozen=True)
class StageStats:
    corr: float
    max_err: float
    rel_l2: float


@dataclass(frozen=True)
class ParityResult:
    n_phonemes: int
    stages: dict[str, StageStats]
    durations_equal: float  # fraction of tokens with identical integer durations
    rms_ratio: float  # koel audio RMS / reference audio RMS (reference already divided by 1.5)


def stats(ours: np.ndarray | torch.Tensor, ref: np.ndarray) -> StageStats:
    a = np.asarray(ours, dtype=np.float64).ravel()
    b = np.asarray(ref, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: ours {a.shape}, reference {b.shape}")
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float(np.allclose(a, b))
    return StageStats(
        corr, float(np.abs(a - b).max()), float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-12)
    )


@torch.no_grad()
def compare(
    model: KokoroModel, reference: OfficialOnnxReference, ids: list[int], style: torch.Tensor
) -> ParityResult:
    """Run both models on the same tokens (boundaries included) and style row [1, 256]."""
    names = ["albert", "bert_encoder", "duration_encoder", "durations", "f0", "n", "text_encoder", "audio"]
    ref = reference.intermediates(ids, style.numpy(), names)
    ref_audio = np.asarray(ref["audio"]).ravel() / ONNX_AUDIO_GAIN
    tokens = torch.tensor([ids])
    n = model.config.style_dim
    bert = model.bert(tokens)
    d_en = model.bert_encoder(bert)
    d, logits = model.prosody_features(tokens, None, style[:, n:])
    ours_dur = model.durations_from_logits(logits, torch.ones(1))
    ref_dur = torch.as_tensor(ref["durations"]).reshape(1, -1).long()
    forced = model.synthesize(tokens, style, durations=ref_dur)
    t_en = model.text_encoder(tokens, None, None)
    audio = forced.audio[0]
    ref_t = torch.as_tensor(ref_audio, dtype=torch.float32)
    # The export mis-scales its first 10 samples (fact sheet 9.4); compare from sample 10 on.
    mel_ours, mel_ref = log_mel(audio[None, 10:]), log_mel(ref_t[None, 10:])
    assert forced.f0 is not None and forced.energy is not None
    result = {
        "albert": stats(bert, ref["albert"]),
        "bert_encoder": stats(d_en, ref["bert_encoder"]),
        "duration_encoder": stats(d, ref["duration_encoder"]),
        "durations": stats(ours_dur.float(), ref["durations"]),
        "f0": stats(forced.f0, ref["f0"]),
        "energy": stats(forced.energy, ref["n"]),
        "text_encoder": stats(t_en, ref["text_encoder"]),
        "log_mel": stats(mel_ours, mel_ref.numpy()),
    }
    equal = float((ours_dur.numpy().ravel() == np.asarray(ref["durations"]).ravel()).mean())
    rms = float((audio[10:].pow(2).mean().sqrt() / ref_t[10:].pow(2).mean().sqrt().clamp(min=1e-12)).item())
    return ParityResult(len(ids) - 2, result, equal, rms)


# Misaki-style American English, plus a few strings in other languages' symbol sets.
PARITY_SENTENCES = [
    "hˈI.",
    "ˈOkA, ɡˈO!",
    "həlˈO wˈɜɹld.",
    "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɔɡ.",
    "kˈOkəɹO ɪz ən ˈOpən wˈAt tˈɛkst tə spˈiʧ mˈɑdᵊl.",
    "wˌʌt tˈIm ɪz ɪt? ɪts nˈIn θˈɜɹɾi ɪn ðə mˈɔɹnɪŋ.",
    "ʃi sˈɛd, “ðə ɹˈAn ɪn spˈAn stˈAz mˈAnli ɪn ðə plˈAn.”",
    "ɪn tˈu θˈWzənd ˈænd twˈɛnti fˈIv, ðə kˈɑst wʌz θɹˈi hˈʌndɹəd dˈɑləɹz.",
    "ˈɛvɹi mˈɔɹnɪŋ, ðə bˈɜɹdz sˈæŋ fɹʌm ðə tˈɑps ʌv ðə tˈɔl tɹˈiz; ɪt wʌz bjˈuɾəfəl.",
    "ˈɑsəɹ wˈIld wʌz ə pˈOət ænd plˈAɹˌAt, bˈɔɹn ɪn dˈʌblən ɪn ˈeɪtˈin fˈɪfti fˈɔɹ…",
    "tʃˈiz ˈænd wˈIn, bɹˈɛd ænd bˈʌɾəɹ — ˈɔl ʌv ɪt ɔn ðə tˈAbᵊl!",
    "la kˈasa ˈes ɡɾˈande i bonˈita.",
    "ʦɯki ɡa kiɾeː desɯ ne.",
    "bɔ̃ʒuʁ, kɔmɑ̃ ça va?",
]


def parity_strings(total: int = 20, long_lengths: tuple[int, ...] = (200, 510)) -> list[str]:
    """``total`` strings: the hand-written ones, then concatenations cut to the given lengths."""
    out = list(PARITY_SENTENCES)
    joined = " ".join(PARITY_SENTENCES * 8)
    for n in long_lengths:
        cut = joined[:n]
        out.append(cut)
    i = 0
    while len(out) < total:
        out.append(" ".join(PARITY_SENTENCES[i % len(PARITY_SENTENCES)] for _ in range(2)))
        i += 3
    return out[:total]
