"""Request and response bodies: OpenAI's speech API, Kokoro-FastAPI's extensions, and koel's own."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictStr

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class VoiceId(BaseModel):
    """OpenAI's custom-voice object form of the ``voice`` field: ``{"id": "af_heart"}``."""

    id: StrictStr


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``. Unknown fields (e.g. ``normalization_options``) are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(
        "kokoro", description="kokoro, koel, tts-1, tts-1-hd or gpt-4o-mini-tts (all the same model)"
    )
    input: StrictStr = Field(..., description="the text to speak")
    voice: StrictStr | VoiceId = Field(
        "",
        description="a voice (af_heart), a blend (af_heart:0.7+am_michael:0.3 or af_bella(2)+af_sky(1)), or an OpenAI name",
    )
    response_format: AudioFormat | None = Field(
        None, description="mp3 (default), opus, aac, flac, wav or pcm (s16le 24 kHz)"
    )
    speed: StrictFloat = Field(1.0, ge=0.25, le=4.0, allow_inf_nan=False)
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="raw audio bytes, or server-sent events"
    )
    stream: StrictBool = Field(
        True, description="send audio as it is made (Kokoro-FastAPI); false sends one file"
    )
    instructions: StrictStr | None = Field(
        None, description="accepted for compatibility; Kokoro takes no instructions"
    )
    lang: StrictStr | None = Field(
        None, max_length=32, description="language code (a, b, e, f, h, i, j, p, z) or name"
    )
    lang_code: StrictStr | None = Field(None, max_length=32, description="Kokoro-FastAPI's name for lang")
    volume_multiplier: StrictFloat = Field(1.0, ge=0.0, le=10.0, allow_inf_nan=False)

    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice

    def language(self) -> str | None:
        return self.lang or self.lang_code


class CaptionedSpeechRequest(SpeechRequest):
    """``POST /v1/audio/captioned_speech``: audio plus word timestamps, and optionally subtitles."""

    return_timestamps: StrictBool = True
    subtitles: Literal["srt", "vtt"] | None = Field(None, description="also return subtitles in this format")
    subtitle_level: Literal["sentence", "word"] = "sentence"


class PhonemizeRequest(BaseModel):
    """``POST /v1/audio/phonemize``; ``text``/``language`` are Kokoro-FastAPI's names for the fields."""

    model_config = ConfigDict(extra="ignore")

    input: StrictStr | None = None
    text: StrictStr | None = None
    lang: StrictStr | None = Field(None, max_length=32)
    language: StrictStr | None = Field(None, max_length=32)

    def the_text(self) -> str | None:
        return self.input if self.input is not None else self.text

    def the_lang(self) -> str:
        return self.lang or self.language or "a"


class PhonemizeResponse(BaseModel):
    phonemes: str
    tokens: list[int]


class WordTimestampOut(BaseModel):
    """A spoken word: seconds from the start of the audio, and its character span in the input."""

    word: str
    start_time: float
    end_time: float
    char_start: int = -1
    char_end: int = -1


class CaptionedSpeechResponse(BaseModel):
    """One NDJSON line of a streamed captioned response, or the whole non-streamed response."""

    audio: str = Field(..., description="base64 of the encoded audio")
    audio_format: str
    timestamps: list[WordTimestampOut] = []
    subtitles: str | None = None


class VoiceInfo(BaseModel):
    id: str
    name: str
    language: str | None = None
    language_name: str | None = None
    gender: str | None = None


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "koel"
