"""How each official voice sounds to the speaker encoder: probe embeddings, cached per model.

Ranking the official voices by similarity to a reference picks the blend candidates and gives
the baseline a created voice must beat. Each voice speaks a fixed probe sentence (about 5 s);
their embeddings are cached under the koel cache folder, keyed by the packs and the weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from koel.clone.cache import cache_path, load_cached, model_fingerprint, save_cached
from koel.clone.render import Utterance, speak
from koel.clone.space import VoiceBank
from koel.clone.speaker import SpeakerEncoder
from koel.model import KokoroModel

log = logging.getLogger(__name__)

PROBE_PHONEMES = (
    # "The quick brown fox jumps over the lazy dog, while seven bright birds sing above the quiet river."
    "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˈOvəɹ ðə lˈAzi dˈɔɡ, wˌIl sˈɛvən bɹˈIt bˈɜɹdz sˈɪŋ əbˈʌv ðə kwˈIət ɹˈɪvəɹ.",
)
CACHE_VERSION = "1"


def embed_pack(model: KokoroModel, pack: torch.Tensor, encoder: SpeakerEncoder) -> torch.Tensor:
    """Speaker embedding [256] of a pack [510, 256] speaking the probe sentences."""
    embeddings = []
    for phonemes in PROBE_PHONEMES:
        utt = Utterance.from_phonemes(phonemes)
        row = pack[min(utt.n_phonemes, pack.shape[0]) - 1][None]
        embeddings.append(encoder.embed_utterance(speak(model, utt, row)))
    mean = torch.stack(embeddings).mean(dim=0)
    return mean / mean.norm()


def bank_embeddings(
    model: KokoroModel,
    bank: VoiceBank,
    encoder: SpeakerEncoder,
    cache: Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> torch.Tensor:
    """Probe embeddings [N, 256] of every voice of ``bank`` (computed once, then read from cache).

    ``progress(i, n, name)`` is called before each voice and once with ``i == n`` at the end.
    """
    path = cache_path(
        "bank", CACHE_VERSION, bank.fingerprint(), model_fingerprint(model), *PROBE_PHONEMES, cache=cache
    )
    data = load_cached(path)
    if data is not None and tuple(data.get("names", ())) == bank.names:
        embeddings = data.get("embeddings")
        if isinstance(embeddings, torch.Tensor) and embeddings.shape == (len(bank), 256):
            if progress:
                progress(len(bank), len(bank), "cached")
            return embeddings
    start = time.perf_counter()
    rows = []
    for i, (name, pack) in enumerate(zip(bank.names, bank.packs)):
        if progress:
            progress(i, len(bank), name)
        rows.append(embed_pack(model, pack, encoder))
    if progress:
        progress(len(bank), len(bank), "done")
    embeddings = torch.stack(rows)
    save_cached(path, {"names": list(bank.names), "embeddings": embeddings})
    log.info(
        "embedded %d official voices in %.0f s (cached in %s)", len(bank), time.perf_counter() - start, path
    )
    return embeddings


def rank_voices(
    embeddings: torch.Tensor, target: torch.Tensor, names: tuple[str, ...]
) -> list[tuple[str, float]]:
    """(name, cosine similarity to ``target``) from most to least similar."""
    sims = embeddings @ target
    order = torch.argsort(sims, descending=True)
    return [(names[int(i)], float(sims[i])) for i in order]
