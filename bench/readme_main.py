"""The README's main command on a fresh clone: does it produce intelligible English speech?

    python bench/readme_main.py [--repo .] [--keep]

Clones the repository's HEAD into a temporary folder, runs the first command of the README's
"Two commands" section exactly as written (it creates ``.venv`` and installs everything), with an
empty koel cache and no voices directory, as on a user's machine. Then Whisper base transcribes
the WAV it wrote; the script prints the set-up and synthesis time, the voice koel reported using,
the transcript and the WER against the sentence in the command; with ../shared/voices present it
also speaks the command with af_heart, the voice an online user gets from the hub. The sentence
holds two rare names ("koel", "Kokoro") that Whisper tends to write as "Cole" and "Kakoro".
Needs the bench extras (Whisper).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from whisper_util import load_whisper, normalized_wer, transcribe  # noqa: E402


def main_command(readme: str) -> str:
    """The first bash block of the README (the 'speak a sentence' command)."""
    match = re.search(r"```bash\n(.*?)```", readme, re.S)
    if not match:
        raise SystemExit("README has no bash block")
    return match.group(1).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=HERE.parent)
    p.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = p.parse_args(argv)

    command = main_command((args.repo / "README.md").read_text(encoding="utf-8"))
    spoken = re.search(r'say "([^"]+)"', command)
    output = re.search(r"-o (\S+)", command)
    if not spoken or not output:
        raise SystemExit(f"cannot find the sentence and output file in: {command}")
    work = Path(tempfile.mkdtemp(prefix="koel-readme-"))
    try:
        clone = work / "koel"
        subprocess.run(["git", "clone", "--quiet", str(args.repo), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KOEL_", "VIRTUAL_ENV"))}
        env["KOEL_CACHE_DIR"] = str(work / "cache")  # empty: the conversion runs as on a new machine
        print(f"$ {command}", flush=True)
        t0 = time.perf_counter()
        run = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        print(run.stdout[-2000:] + run.stderr[-2000:])
        if run.returncode != 0:
            print(f"FAILED: exit status {run.returncode}")
            return 1
        # Time the synthesis alone, now that .venv exists (second run: cached weights).
        say = shlex.split(command.split("&&", 1)[1])
        t1 = time.perf_counter()
        subprocess.run(say, cwd=clone, env=env, check=True, capture_output=True)
        again = time.perf_counter() - t1

        import soundfile as sf

        audio, rate = sf.read(str(clone / output.group(1)), dtype="float32")
        if rate != 24_000:
            raise SystemExit(f"expected 24 kHz, got {rate}")
        whisper = load_whisper()
        heard = transcribe(whisper, audio).text
        wer = normalized_wer([spoken.group(1)], [heard])
        print(f"set-up + first synthesis: {elapsed:.0f} s; synthesis again (cached weights): {again:.1f} s")
        print(f"audio: {len(audio) / rate:.2f} s at {rate} Hz")
        print(f"said:  {spoken.group(1)}")
        print(f"heard: {heard}   (WER {wer:.1%}, Whisper base, normalised)")
        shared = args.repo.resolve().parent / "shared" / "voices"
        if shared.is_dir():  # what an online user gets: the default voice af_heart from the hub
            env["KOEL_VOICES_DIR"] = str(shared)
            subprocess.run(say, cwd=clone, env=env, check=True, capture_output=True)
            audio, _ = sf.read(str(clone / output.group(1)), dtype="float32")
            heard = transcribe(whisper, audio).text
            wer_heart = normalized_wer([spoken.group(1)], [heard])
            print(f"heard with af_heart (as online): {heard}   (WER {wer_heart:.1%})")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
