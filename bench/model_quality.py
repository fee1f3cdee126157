"""Speech quality of koel's model vs the official int8 export on the same phonemes.

    python bench/model_quality.py [--voices af_heart am_michael af_bella] [--engine torch|onnx|auto]

30 English sentences are phonemised once by koel's front end; each voice speaks them through
koel's engine and through the official export (onnxruntime, 2 threads). Whisper base transcribes
both (WER after Whisper-style normalisation) and DNSMOS (speechmos) scores overall quality.
Needs ../shared/voices and the bench extras (pip install -e ".[bench]").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
SHARED_VOICES = Path(__file__).resolve().parents[2] / "shared" / "voices"

SENTENCES = [
    "The library opens early on weekdays and closes late on Fridays.",
    "She packed two sandwiches, an apple, and a bottle of water for the hike.",
    "Our train was delayed because of a signal problem near the station.",
    "Please remember to water the plants while I am away.",
    "The orchestra tuned their instruments before the concert began.",
    "He painted the fence a bright shade of green last summer.",
    "A gentle breeze moved through the tall grass in the meadow.",
    "The committee will announce the winners at the end of the month.",
    "Fresh bread from the corner bakery smells wonderful in the morning.",
    "They watched the sunset from the top of the hill.",
    "My grandmother tells the best stories about her childhood on the farm.",
    "The museum added a new exhibit about ancient navigation.",
    "Could you send me the report before the meeting tomorrow?",
    "The children built a sandcastle with towers and a moat.",
    "Scientists measured the temperature of the lake every hour.",
    "The bridge was closed for repairs during the winter.",
    "A small cat slept peacefully on the warm windowsill.",
    "We should leave now if we want to catch the last bus.",
    "The chef prepared a simple soup with carrots and onions.",
    "Thunder rolled across the valley as the storm approached.",
    "The students asked thoughtful questions after the lecture.",
    "Her new bicycle has a basket and a bright red bell.",
    "The garden was full of roses, tulips, and daisies.",
    "He forgot his umbrella and got soaked on the way home.",
    "The pilot announced that we would land in twenty minutes.",
    "Volunteers cleaned the beach and collected many bags of plastic.",
    "The old clock in the hallway still keeps perfect time.",
    "I would like a cup of tea with a little milk, please.",
    "The team celebrated their victory with a quiet dinner.",
    "Mountains covered in snow stood silently behind the village.",
]


def dnsmos(audio_24k: np.ndarray) -> float:
    from speechmos import dnsmos as dns

    from koel.audio import resample

    audio = resample(audio_24k.astype(np.float32), 24000, 16000)
    peak = float(np.abs(audio).max()) or 1.0
    return float(dns.run(audio / peak * 0.9, 16000, return_df=False)["ovrl_mos"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voices", nargs="+", default=["af_heart", "am_michael", "af_bella"])
    parser.add_argument("--engine", default="torch", help="koel engine: torch, onnx or auto")
    parser.add_argument("--limit", type=int, default=len(SENTENCES))
    args = parser.parse_args()
    if not SHARED_VOICES.is_dir():
        raise SystemExit(f"needs the official voice packs in {SHARED_VOICES}")
    os.environ.setdefault("KOEL_VOICES_DIR", str(SHARED_VOICES))

    from koel.backends.base import EngineRequest
    from koel.paths import cache_dir
    from koel.reference import OfficialOnnxReference
    from koel.text import FrontEnd
    from koel.tokenizer import encode, with_boundaries
    from koel.voices import VoiceStore
    from koel.weights.onnx_import import official_onnx_path
    from whisper_util import load_whisper, normalized_wer, transcribe

    engine = _engine(args.engine)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    reference = OfficialOnnxReference(
        official_onnx_path(cache if os.access(cache, os.W_OK) else Path(tempfile.mkdtemp()))
    )
    front = FrontEnd("a")
    sentences = SENTENCES[: args.limit]
    phonemes = [front.phonemize(s) for s in sentences]
    whisper = load_whisper()
    store = VoiceStore()
    print(f"koel engine: {engine.name}; {len(sentences)} sentences; Whisper base; DNSMOS overall (speechmos)")
    print(f"{'voice':12s} {'system':8s} {'WER %':>7s} {'DNSMOS':>7s}")
    totals: dict[str, list[tuple[float, float]]] = {"koel": [], "export": []}
    for name in args.voices:
        voice = store.get(name)
        hyps: dict[str, list[str]] = {"koel": [], "export": []}
        mos: dict[str, list[float]] = {"koel": [], "export": []}
        for ps in phonemes:
            ids = with_boundaries(encode(ps))
            style = voice.row(len(ps))
            ours = engine.run([EngineRequest(tuple(ids), style.reshape(-1).numpy(), 1.0)])[0].audio
            theirs = reference.synthesize(ids, style.numpy())
            for system, audio in (("koel", ours), ("export", theirs)):
                hyps[system].append(transcribe(whisper, audio, lang="en").text)
                mos[system].append(dnsmos(audio))
        for system in ("koel", "export"):
            wer = 100 * normalized_wer(sentences, hyps[system])
            totals[system].append((wer, float(np.mean(mos[system]))))
            print(f"{name:12s} {system:8s} {wer:7.2f} {np.mean(mos[system]):7.3f}")
    k = np.mean(totals["koel"], axis=0)
    e = np.mean(totals["export"], axis=0)
    print(f"{'mean':12s} {'koel':8s} {k[0]:7.2f} {k[1]:7.3f}")
    print(f"{'mean':12s} {'export':8s} {e[0]:7.2f} {e[1]:7.3f}")
    print(
        f"WER koel - export: {k[0] - e[0]:+.2f} points (bar: <= +1); DNSMOS koel - export: {k[1] - e[1]:+.3f} (bar: >= -0.05)"
    )


def _engine(kind: str):
    if kind == "torch":
        from koel.backends.torch_engine import TorchEngine
        from koel.weights.loading import load_model

        return TorchEngine(load_model())
    from koel.backends.auto import default_engine  # written with the ONNX engine

    return default_engine(prefer=None if kind == "auto" else kind)


if __name__ == "__main__":
    main()
