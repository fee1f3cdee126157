"""Voice arithmetic: blend, interpolate, measure, and edit along measured directions.

Pitch and speaking rate are properties of the prosody half of a style row (the predictor alone
turns it into durations and F0), so they are measured without the vocoder in well under a second
per voice. Edit directions come from the official voices: each is measured, and a regression of
the measurements on the voices' mean prosody rows (inside the span of their top principal
components) gives one direction per attribute. An edit moves a voice along the minimal-norm
combination of directions that changes the requested attribute and holds the others, then
corrects the step size by measuring the edited voice (secant iterations).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from koel.clone.cache import cache_path, load_cached, model_fingerprint, save_cached
from koel.clone.errors import CloneError
from koel.clone.render import Utterance
from koel.clone.screen import PROBE_PHONEMES
from koel.clone.space import VoiceBank
from koel.constants import FRAME_SAMPLES, SAMPLE_RATE
from koel.model import KokoroModel
from koel.model.kokoro import alignment_from_durations
from koel.voices import Voice, blend, validate_pack

log = logging.getLogger(__name__)

MEASURE_PHONEMES = (
    *PROBE_PHONEMES,
    "kˌʊd ju plˈiz bɹˈɪŋ mˌi ɐ kˈʌp ʌv hˈɑt tˈi ænd ɐ slˈIs ʌv bɹˈɛd?",
    "ˈɑnəstli, ˌI nˈɛvəɹ ɪkspˈɛktᵻd ðə lˈɪTᵊl ʃˈɑp ˌɔn ðə kˈɔɹnəɹ tə bəkˈʌm sˌO pˈɑpjələɹ.",
    "wˌi mˈɛʒəɹd ðə dˈɪstᵊns twˈIs, bəkˈʌz ðə fˈɜɹst ɹəzˈʌlt lˈʊkt fˈɑɹ tˈu smˈɔl.",
)
ATTRIBUTES = ("pitch", "rate", "spread")
"""pitch: mean F0 in semitones; rate: log phonemes per second; spread: F0 std in semitones."""
PCA_COMPONENTS = 12
DIRECTIONS_VERSION = "1"
TOLERANCE = 0.05
"""Edits stop when every attribute is this close (semitones, log rate) to its target."""


def blend_voices(parts: list[tuple[Voice, float]], name: str | None = None) -> Voice:
    """Weighted average of packs; weights are normalised to sum to 1."""
    if not parts:
        raise CloneError("nothing to blend: give at least one voice")
    total = sum(w for _, w in parts)
    if total <= 0 or any(w < 0 for _, w in parts):
        raise CloneError("blend weights must be non-negative and not all zero")
    mixed = blend([(v, w / total) for v, w in parts], name=name)
    return Voice(mixed.name, validate_pack(mixed.pack, mixed.name), source="blend")


def interpolate(a: Voice, b: Voice, t: float, name: str | None = None) -> Voice:
    """(1 - t) * a + t * b. t outside [0, 1] extrapolates (allowed up to 0.5 beyond the ends)."""
    if not -0.5 <= t <= 1.5:
        raise CloneError(f"interpolation factor {t} is too far outside [0, 1] (use -0.5 .. 1.5)")
    if not 0 <= t <= 1:
        log.warning(
            "t=%g extrapolates beyond %s and %s; check that the voice still sounds right", t, a.name, b.name
        )
    label = name or f"{a.name}>{b.name}@{t:g}"
    return Voice(label, validate_pack((1 - t) * a.pack + t * b.pack, label), source="interpolation")


@dataclass(frozen=True)
class VoiceMeasure:
    """What the prosody half of a voice does on the measurement sentences."""

    pitch_hz: float
    spread_semitones: float
    phonemes_per_second: float

    def vector(self) -> np.ndarray:
        return np.array(
            [12 * math.log2(self.pitch_hz), math.log(self.phonemes_per_second), self.spread_semitones]
        )

    def __str__(self) -> str:
        return (
            f"pitch {self.pitch_hz:.0f} Hz, pitch spread {self.spread_semitones:.1f} semitones, "
            f"rate {self.phonemes_per_second:.1f} phonemes/s"
        )


@torch.no_grad()
def measure_voice(model: KokoroModel, pack: torch.Tensor) -> VoiceMeasure:
    """Pitch, pitch spread and speaking rate of a pack [510, 256] (prosody predictor only)."""
    logs: list[torch.Tensor] = []
    phonemes = seconds = 0.0
    for text in MEASURE_PHONEMES:
        utt = Utterance.from_phonemes(text)
        ids = utt.ids.to(model.device)
        s_p = pack[min(utt.n_phonemes, pack.shape[0]) - 1][None, model.config.style_dim :].to(model.device)
        d, logits = model.prosody_features(ids, None, s_p)
        soft = torch.sigmoid(logits).sum(dim=-1)[0]
        alignment = alignment_from_durations(soft.round().clamp(min=1).long()[None])
        f0, _ = model.predictor.f0_energy(d.transpose(1, 2) @ alignment, s_p, None)
        logs.append(torch.log2(f0[f0 > 50]))
        phonemes += ids.shape[1] - 2
        seconds += float(soft[1:-1].sum()) * FRAME_SAMPLES / SAMPLE_RATE
    log2 = torch.cat(logs)
    if len(log2) < 10:
        raise CloneError("the voice produces (almost) no voiced speech; it cannot be measured")
    return VoiceMeasure(float(2 ** log2.mean()), float(12 * log2.std()), phonemes / max(seconds, 1e-6))


@dataclass(frozen=True)
class EditDirections:
    """One direction [128] in prosody-style space per attribute, in attribute units per step."""

    directions: torch.Tensor  # [A, 128]: moving by directions[i] changes attribute i by 1 unit
    fit_r2: tuple[float, ...]


def edit_directions(model: KokoroModel, bank: VoiceBank, cache: Path | None = None) -> EditDirections:
    """Regress the measured attributes of the bank voices on their mean prosody rows.

    Measuring the 54 official voices takes one to two minutes on a CPU core, so the result is
    cached under the koel cache folder, keyed by the packs, the weights and the sentences.
    """
    if len(bank) < 6:
        raise CloneError(f"measuring edit directions needs at least 6 voices, got {len(bank)}")
    path = cache_path(
        "directions",
        DIRECTIONS_VERSION,
        bank.fingerprint(),
        model_fingerprint(model),
        *MEASURE_PHONEMES,
        cache=cache,
    )
    data = load_cached(path)
    if data is not None:
        stored, r2 = data.get("directions"), data.get("fit_r2")
        if isinstance(stored, torch.Tensor) and stored.shape == (len(ATTRIBUTES), model.config.style_dim):
            return EditDirections(stored, tuple(float(r) for r in r2 or ()))
    x = bank.packs[:, :, model.config.style_dim :].mean(dim=1).double()  # [N, 128]
    y = torch.tensor(np.stack([measure_voice(model, p).vector() for p in bank.packs]))  # [N, A]
    xc, yc = x - x.mean(dim=0), y - y.mean(dim=0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    basis = vh[: min(PCA_COMPONENTS, len(bank) - 2)]  # [P, 128]
    z = xc @ basis.T
    coef = torch.linalg.lstsq(z, yc).solution  # [P, A]
    residual = yc - z @ coef
    r2 = tuple(float(1 - residual[:, a].var() / yc[:, a].var()) for a in range(y.shape[1]))
    gradients = (basis.T @ coef).T  # [A, 128]: d attribute / d style
    # Minimal-norm steps that change one attribute by one unit and leave the others unchanged.
    steps = gradients.T @ torch.linalg.inv(gradients @ gradients.T)  # [128, A]
    log.info("edit directions fitted on %d voices: R^2 %s", len(bank), ", ".join(f"{r:.2f}" for r in r2))
    directions = EditDirections(steps.T.float().contiguous(), r2)
    save_cached(path, {"directions": directions.directions, "fit_r2": list(r2)})
    return directions


def edit_voice(
    model: KokoroModel,
    voice: Voice,
    directions: EditDirections,
    *,
    pitch: float = 0.0,
    rate: float = 1.0,
    spread: float = 1.0,
    name: str | None = None,
    iterations: int = 3,
) -> tuple[Voice, VoiceMeasure, VoiceMeasure]:
    """Shift pitch by ``pitch`` semitones, scale the rate and the pitch spread by factors.

    Returns (edited voice, measure before, measure after).
    """
    if not -12 <= pitch <= 12:
        raise CloneError(f"pitch shift {pitch} semitones is out of range (-12 .. 12)")
    for what, factor in (("rate", rate), ("spread", spread)):
        if not 0.5 <= factor <= 2.0:
            raise CloneError(f"{what} factor {factor} is out of range (0.5 .. 2)")
    before = measure_voice(model, voice.pack)
    label = name or f"{voice.name}-edited"
    target = before.vector() + np.array([pitch, math.log(rate), (spread - 1) * before.spread_semitones])
    half = model.config.style_dim
    delta = torch.zeros(len(ATTRIBUTES), dtype=torch.float64)
    current, after = voice.pack, before
    for _ in range(iterations):
        miss = torch.tensor(target - after.vector())
        if float(miss.abs().max()) < TOLERANCE:
            break
        # The linear model's step, corrected by what the edited voice actually measures.
        delta = delta + miss
        current = voice.pack.clone()
        current[:, half:] += (delta.float() @ directions.directions)[None]
        after = measure_voice(model, current)
    return Voice(label, validate_pack(current, label), source="edit"), before, after
