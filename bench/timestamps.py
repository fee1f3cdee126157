"""Word timestamps vs Whisper base's word timings (English and Spanish).

    python bench/timestamps.py

For each sentence, koel's words are matched to Whisper's (difflib on normalised spellings); a word
passes when koel's midpoint lies inside the span Whisper gives the same word. Prints the pass rate
and the median |koel midpoint - Whisper midpoint| per language. Needs ../shared/voices.
Rows marked * use sentences (and voices) that were not looked at when the constants of koel's
timestamps (LEAD_FRAMES, SILENCE_DB in koel.pipeline) were chosen.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
SHARED_VOICES = Path(__file__).resolve().parents[2] / "shared" / "voices"

ENGLISH = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Every morning she walks her two dogs around the quiet park.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Please close the window before you leave the office tonight.",
    "The concert was cancelled because of the heavy storm.",
    "My brother bought a red bicycle with a silver bell.",
    "We planted tomatoes, peppers, and beans in the garden.",
    "The teacher explained the lesson slowly and clearly.",
    "A famous painter lived in this small house for many years.",
    "They celebrated the victory with music and dancing until midnight.",
    "Fresh coffee and warm bread make a perfect breakfast.",
    "The museum opens at nine and closes at five every day.",
]
# Sentences never looked at while LEAD_FRAMES and SILENCE_DB (koel.pipeline) were chosen.
ENGLISH_NEW = [
    "The farmer drove his old truck to the market before sunrise.",
    "A small boat drifted slowly across the calm blue lake.",
    "Our neighbors painted their kitchen a warm shade of yellow.",
    "The pilot announced that we would land twenty minutes early.",
    "He forgot his umbrella, so he ran home through the rain.",
    "The students finished their science project on Thursday.",
    "A black cat slept on the sunny window sill all afternoon.",
    "The baker makes fresh rolls and sweet pastries every morning.",
    "We hiked to the top of the mountain and watched the clouds.",
    "The doctor told him to drink more water and rest for a week.",
]
SPANISH_NEW = [
    "La profesora explicó la lección con mucha paciencia.",
    "Los pájaros cantan en los árboles al amanecer.",
    "Mi padre prepara café fuerte todas las mañanas.",
    "El museo abre sus puertas a las diez en punto.",
    "Nosotros caminamos junto al río después de cenar.",
]
SPANISH = [
    "El perro corre rápidamente por el parque cada mañana.",
    "Mi hermana compró un libro nuevo en la librería del centro.",
    "La ciudad tiene muchos museos y parques muy bonitos.",
    "Mañana vamos a visitar a nuestros abuelos en el campo.",
    "El tren sale de la estación a las ocho de la noche.",
    "Los niños juegan en la playa durante todo el verano.",
]


def norm(word: str) -> str:
    word = unicodedata.normalize("NFKD", word.lower())
    return re.sub(r"[^a-z0-9]", "", "".join(c for c in word if not unicodedata.combining(c)))


def evaluate(pipe, whisper, sentences: list[str], voice: str, lang: str, whisper_lang: str):
    from whisper_util import transcribe

    hits, offsets = 0, []
    total = 0
    for text in sentences:
        utt = pipe.synthesize(text, voice=voice, lang=lang)
        ours = [(norm(w.word), (w.start + w.end) / 2) for w in utt.words if norm(w.word)]
        heard = transcribe(whisper, utt.audio, lang=whisper_lang, word_timestamps=True)
        theirs = [(norm(word), start, end) for word, start, end in heard.words if norm(word)]
        matcher = difflib.SequenceMatcher(a=[o[0] for o in ours], b=[t[0] for t in theirs], autojunk=False)
        total += len(ours)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                _, mid = ours[block.a + k]
                _, start, end = theirs[block.b + k]
                hits += start <= mid <= end
                offsets.append(abs(mid - (start + end) / 2))
    return hits, total, len(offsets), float(np.median(offsets)) if offsets else float("nan")


def main() -> None:
    if not SHARED_VOICES.is_dir():
        raise SystemExit(f"needs the official voice packs in {SHARED_VOICES}")
    os.environ.setdefault("KOEL_VOICES_DIR", str(SHARED_VOICES))
    from koel.pipeline import Pipeline
    from whisper_util import load_whisper

    pipe = Pipeline(voice="af_heart")
    whisper = load_whisper()
    print(
        f"{'language':10s} {'voice':10s} {'words':>6s} {'matched':>8s} {'midpoint inside':>16s} {'median offset s':>16s}"
    )
    for name, sentences, voice, lang, wl in (
        ("English", ENGLISH, "af_heart", "a", "en"),
        ("English*", ENGLISH_NEW, "af_heart", "a", "en"),
        ("English*", ENGLISH_NEW, "am_michael", "a", "en"),
        ("Spanish", SPANISH, "ef_dora", "e", "es"),
        ("Spanish*", SPANISH_NEW, "em_alex", "e", "es"),
    ):
        hits, total, matched, median = evaluate(pipe, whisper, sentences, voice, lang, wl)
        rate = hits / max(matched, 1)
        print(f"{name:10s} {voice:10s} {total:6d} {matched:8d} {rate:15.1%} {median:16.3f}")
    print("* sentences and voices not used when koel's timestamp constants were chosen")


if __name__ == "__main__":
    main()
