"""Create a voice pack from reference recordings by optimising it through the frozen model.

1. Read and check the recordings; get transcripts (given, from Whisper, or none).
2. Rank the official voices by speaker similarity to the reference; the closest K seed a blend.
3. Optimise blend weights and a regularised offset (:mod:`koel.clone.space`) with Adam against
   :class:`koel.clone.objective.CloneObjective`, one synthetic crop per step.
4. Check the result speaks (finite, audible audio) before it is returned; nothing is written here.

Why a transcript, and why it is optional: the objective compares pooled statistics, not aligned
frames, so it works with any text. A transcript still helps twice: the synthetic side speaks the
same words as the reference (so spectra and speaker embeddings compare like with like), and the
phoneme count of the transcript over the speech time gives the speaking-rate target. Without
one, Whisper base (from PyPI, offline) transcribes when installed; otherwise generic sentences
are spoken and the rate term is off, which still matches identity, spectrum and pitch.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from koel.clone.audio_input import ReferenceClip, check_total_speech, load_reference
from koel.clone.errors import CloneError
from koel.clone.objective import CloneObjective, LogMel, LossWeights, ReferenceTargets, reference_targets
from koel.clone.render import Utterance, freeze, render_crop, seconds_to_steps, speak
from koel.clone.screen import PROBE_PHONEMES, bank_embeddings, rank_voices
from koel.clone.space import StyleParams, VoiceBank, official_bank
from koel.clone.speaker import SpeakerEncoder
from koel.constants import MAX_PHONEMES
from koel.model import KokoroModel
from koel.voices import Voice, VoiceStore, validate_pack

log = logging.getLogger(__name__)

WHISPER_LANGUAGES = {
    "a": "en",
    "b": "en",
    "e": "es",
    "f": "fr",
    "h": "hi",
    "i": "it",
    "j": "ja",
    "p": "pt",
    "z": "zh",
}
GENERIC_TEXTS = (
    "The morning light came slowly over the hills, and the village began to wake.",
    "She asked whether the train would leave on time, but nobody seemed to know.",
    "Please remember to water the plants and lock the back door before you go.",
    "We measured the distance twice, because the first result looked far too small.",
    "Honestly, I never expected the little shop on the corner to become so popular.",
    "After the storm, the children ran outside to look for shells along the beach.",
)
"""Texts spoken during optimisation when no transcript is available (English voices)."""


@dataclass(frozen=True)
class CloneOptions:
    """Settings of one voice creation. The defaults take 2-4 minutes of one CPU core."""

    steps: int = 60
    crop_seconds: float = 1.6
    candidates: int = 8
    learning_rate: float = 0.08
    temperature: float = 0.02
    """Softmax temperature that turns screening similarities into initial blend weights."""
    weights: LossWeights = field(default_factory=LossWeights)
    average_last: float = 0.3
    """Fraction of the final steps whose parameters are averaged (steadier than the last step)."""
    transcribe: bool | None = None
    """True: always transcribe missing transcripts; False: never; None: when Whisper is installed."""
    lang: str = "a"
    max_utterances: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.candidates < 1:
            raise CloneError("steps and candidates must be at least 1")
        if not 0.4 <= self.crop_seconds <= 10:
            raise CloneError(f"crop_seconds must be between 0.4 and 10, got {self.crop_seconds}")


@dataclass
class CloneResult:
    """A created voice and how it was made."""

    voice: Voice
    similarity: float
    """Speaker similarity of the new voice (probe sentences) to the reference."""
    ranking: list[tuple[str, float]]
    """Official voices by similarity to the reference (the best is the baseline to beat)."""
    targets: ReferenceTargets
    transcript_source: str
    history: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    blend: str = ""

    @property
    def best_official(self) -> tuple[str, float]:
        return self.ranking[0]


ProgressFn = Callable[[str, int, int, dict[str, float]], None]


def split_sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?;:])\s+", " ".join(text.split()))
    return [p for p in parts if re.search(r"\w", p)]


def phonemize_texts(texts: Sequence[str], lang: str) -> list[Utterance]:
    """Texts -> sentence-sized utterances (the front end splits anything over the phoneme limit)."""
    from koel.text import FrontEnd

    front = FrontEnd(lang)
    utterances = []
    for text in texts:
        for sentence in split_sentences(text):
            for chunk in front.chunks(sentence):
                phonemes = chunk.phonemes.strip()
                if phonemes and len(phonemes) <= MAX_PHONEMES:
                    utterances.append(Utterance.from_phonemes(phonemes))
    return utterances


def _transcripts(
    clips: list[ReferenceClip], options: CloneOptions, notes: list[str], progress: ProgressFn | None
) -> str:
    """Fill missing transcripts when allowed; returns 'given', 'whisper', 'mixed' or 'none'."""
    missing = [c for c in clips if not c.transcript]
    if not missing:
        return "given"
    from koel.clone.transcribe import transcribe, whisper_available

    if options.transcribe is False or (options.transcribe is None and not whisper_available()):
        notes.append(
            "no transcript: optimising on generic sentences without a speaking-rate target "
            "(give --text, or install faster-whisper and the Whisper base packages)"
        )
        return "given" if len(missing) < len(clips) else "none"
    language = WHISPER_LANGUAGES.get(options.lang, "en")
    for i, clip in enumerate(missing):
        if progress:
            progress("transcribe", i, len(missing), {})
        clip.transcript = transcribe(clip.speech_audio(), lang=language)
        log.info("transcript of %s: %s", clip.name, clip.transcript)
        if not re.search(r"\w", clip.transcript or ""):
            raise CloneError(
                f"{clip.name}: Whisper heard no words; is it speech? Give the transcript with --text"
            )
    return "whisper" if len(missing) == len(clips) else "mixed"


def create_voice(
    references: Sequence[str | Path | ReferenceClip],
    *,
    name: str,
    transcripts: Sequence[str | None] | None = None,
    model: KokoroModel | None = None,
    store: VoiceStore | None = None,
    bank: VoiceBank | None = None,
    options: CloneOptions | None = None,
    progress: ProgressFn | None = None,
) -> CloneResult:
    """Fit a new voice pack [510, 256] to the speaker of ``references`` (paths or clips)."""
    options = options or CloneOptions()
    started = time.perf_counter()
    if not references:
        raise CloneError("give at least one reference recording")
    if transcripts is not None and len(transcripts) not in (0, len(references)):
        raise CloneError(
            f"{len(transcripts)} transcripts for {len(references)} recordings: give one per recording"
        )
    clips = [r if isinstance(r, ReferenceClip) else load_reference(r) for r in references]
    for clip, text in zip(clips, transcripts or []):
        if text:
            clip.transcript = text
    notes = check_total_speech(clips)  # raises before any slow step when there is too little speech
    source = _transcripts(clips, options, notes, progress)
    for note in notes:  # the clips' own warnings were logged when they were read
        log.warning("%s", note)
    notes = [w for c in clips for w in c.warnings] + notes
    texts = [c.transcript for c in clips if c.transcript]
    if texts:
        utterances = phonemize_texts(texts, options.lang)
    elif options.lang in ("a", "b"):
        utterances = phonemize_texts(GENERIC_TEXTS, options.lang)
    else:
        raise CloneError(
            f"without a transcript only English voices can be created; give --text for lang {options.lang!r}"
        )
    if not utterances:
        raise CloneError("the transcripts gave no phonemes to speak; check the text and the language")
    phoneme_count = sum(u.n_phonemes for u in utterances) if texts and len(texts) == len(clips) else None
    utterances = utterances[: options.max_utterances]

    if model is None:
        from koel.weights.loading import load_model

        model = load_model()
    freeze(model)
    encoder = SpeakerEncoder.pretrained()
    logmel = LogMel()
    targets = reference_targets(clips, encoder, logmel, phoneme_count)
    log.info("reference: %s", targets.summary())

    bank = bank or official_bank(store)
    embeddings = bank_embeddings(
        model, bank, encoder, progress=(lambda i, n, _: progress("screen", i, n, {})) if progress else None
    )
    ranking = rank_voices(embeddings, targets.embedding, bank.names)
    top = [n for n, _ in ranking[: options.candidates]]
    sims = torch.tensor([s for _, s in ranking[: options.candidates]])
    params = StyleParams(bank.subset(top), torch.softmax((sims - sims.max()) / options.temperature, dim=0))
    history = optimise(
        model,
        params,
        utterances,
        CloneObjective(targets, encoder, logmel, options.weights),
        options,
        progress,
    )

    pack = validate_pack(params.pack(), name)
    similarity = check_voice(model, pack, encoder, targets)
    log.info("created %s: similarity %.3f (best official %s %.3f)", name, similarity, *ranking[0])
    return CloneResult(
        voice=Voice(name=name, pack=pack, source="created"),
        similarity=similarity,
        ranking=ranking,
        targets=targets,
        transcript_source=source,
        history=history,
        warnings=notes,
        seconds=time.perf_counter() - started,
        blend=params.describe(),
    )


def optimise(
    model: KokoroModel,
    params: StyleParams,
    utterances: list[Utterance],
    objective: CloneObjective,
    options: CloneOptions,
    progress: ProgressFn | None = None,
) -> list[dict[str, float]]:
    """Adam on the blend logits and offset; the last steps' parameters are averaged in place."""
    rng = np.random.default_rng(options.seed)
    optimizer = torch.optim.Adam(params.parameters(), lr=options.learning_rate)
    crop = seconds_to_steps(options.crop_seconds)
    order = rng.permutation(len(utterances))
    average_from = options.steps - max(1, int(options.average_last * options.steps))
    averaged = [torch.zeros_like(p) for p in params.parameters()]
    history = []
    for step in range(options.steps):
        utt = utterances[int(order[step % len(order)])]
        style = params.rows([utt.n_phonemes])
        out = render_crop(model, utt, style, crop, rng)
        loss, terms = objective(
            out.audio, out.f0, out.energy, out.soft_frames, out.n_tokens, params.offset_penalty()
        )
        if not math.isfinite(float(loss.detach())):
            raise CloneError(
                f"the optimisation diverged at step {step + 1} (loss {float(loss.detach())}); try fewer steps"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        terms["loss"] = float(loss.detach())
        history.append(terms)
        if step >= average_from:
            for acc, p in zip(averaged, params.parameters()):
                acc.add_(p.detach())
        if progress:
            progress("optimise", step + 1, options.steps, terms)
        log.debug("step %d: %s", step + 1, terms)
    with torch.no_grad():
        for acc, p in zip(averaged, params.parameters()):
            p.copy_(acc / (options.steps - average_from))
    return history


def check_voice(
    model: KokoroModel, pack: torch.Tensor, encoder: SpeakerEncoder, targets: ReferenceTargets
) -> float:
    """Speak the probe sentences; refuse a pack that gives silence or non-finite audio."""
    embeddings = []
    for phonemes in PROBE_PHONEMES:
        utt = Utterance.from_phonemes(phonemes)
        audio = speak(model, utt, pack[utt.n_phonemes - 1][None])
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
        if not np.isfinite(audio).all() or rms < 1e-3:
            raise CloneError(f"the optimised voice does not speak (RMS {rms:.1e}); nothing was written")
        embeddings.append(encoder.embed_utterance(audio))
    mean = torch.stack(embeddings).mean(dim=0)
    return float(mean / mean.norm() @ targets.embedding)
