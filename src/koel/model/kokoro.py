"""Kokoro-82M: PL-BERT -> prosody (durations, F0, energy) -> alignment -> text encoder -> decoder.

Shape legend: B batch, T tokens (incl. the two boundary tokens), F duration frames (25 ms),
S samples (600 per frame), D hidden_dim, V voice dim (2 * style_dim; acoustic half first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from koel.config import ModelConfig
from koel.model.generator import Decoder
from koel.model.plbert import PLBert
from koel.model.prosody import ProsodyPredictor
from koel.model.text_encoder import TextEncoder


class ModelInputError(ValueError):
    """Inputs the model cannot run on (empty or over-long tokens, wrong style shape, NaN style)."""


@dataclass
class ModelOutput:
    """Batched synthesis result. Padding beyond ``audio_lengths`` / ``token_lengths`` is zero."""

    audio: torch.Tensor  # [B, S_max] float32
    audio_lengths: torch.Tensor  # [B] samples
    durations: torch.Tensor  # [B, T_max] frames per token (long)
    token_lengths: torch.Tensor  # [B]
    f0: torch.Tensor | None = None  # [B, 2F_max] Hz
    energy: torch.Tensor | None = None  # [B, 2F_max]

    def item_audio(self, b: int) -> torch.Tensor:
        return self.audio[b, : int(self.audio_lengths[b])]

    def item_durations(self, b: int) -> torch.Tensor:
        return self.durations[b, : int(self.token_lengths[b])]


def alignment_from_durations(durations: torch.Tensor) -> torch.Tensor:
    """Durations [B, T] (long, zero on padding) -> one-hot alignment [B, T, F_max] (float)."""
    ends = torch.cumsum(durations, dim=1)  # [B, T]
    starts = ends - durations
    frames = torch.arange(int(ends[:, -1].max()), device=durations.device)
    return ((frames[None, None, :] >= starts[..., None]) & (frames[None, None, :] < ends[..., None])).float()


class KokoroModel(nn.Module):
    """The language-blind acoustic model. Module and parameter names follow the official KModel."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.bert = PLBert(config.plbert)
        self.bert_encoder = nn.Linear(config.plbert.hidden_size, config.hidden_dim)
        self.predictor = ProsodyPredictor(
            config.style_dim, config.hidden_dim, config.n_layer, config.max_dur, config.dropout
        )
        self.text_encoder = TextEncoder(
            config.hidden_dim, config.text_encoder_kernel_size, config.n_layer, config.n_token
        )
        self.decoder = Decoder(
            config.hidden_dim, config.style_dim, config.istftnet, config.decoder_dim, config.asr_res_dim
        )

    @property
    def device(self) -> torch.device:
        return self.bert_encoder.weight.device

    # -- stages ---------------------------------------------------------------------------------

    def prosody_features(
        self, input_ids: torch.Tensor, lengths: torch.Tensor | None, s_p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, T] -> (d [B, T, D + S] prosody features, duration logits [B, T, max_dur])."""
        token_mask = None
        if lengths is not None:
            token_mask = torch.arange(input_ids.shape[1], device=input_ids.device)[None] < lengths[:, None]
            token_mask = token_mask.unsqueeze(-1).float()
        bert_out = self.bert(input_ids, lengths)
        d_en = self.bert_encoder(bert_out).transpose(1, 2)
        d = self.predictor.text_encoder(d_en, s_p, lengths, token_mask)
        return d, self.predictor.duration_logits(d, lengths)

    @staticmethod
    def durations_from_logits(
        logits: torch.Tensor, speed: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Ordinal logits [B, T, max_dur] -> integer frames per token [B, T] (>= 1 on valid tokens)."""
        dur = torch.sigmoid(logits).sum(dim=-1) / speed[:, None]
        dur = torch.round(dur).clamp(min=1).long()
        if lengths is not None:
            valid = torch.arange(dur.shape[1], device=dur.device)[None] < lengths[:, None]
            dur = dur * valid
        return dur

    def acoustic(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor | None,
        d: torch.Tensor,
        alignment: torch.Tensor,
        ref_s: torch.Tensor,
        frame_lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Aligned features -> (generator spectrogram logits, F0, energy)."""
        s_a, s_p = self._split_style(ref_s)
        en = d.transpose(1, 2) @ alignment
        f0, energy = self.predictor.f0_energy(en, s_p, frame_lengths)
        token_mask = None
        if lengths is not None:
            token_mask = torch.arange(input_ids.shape[1], device=input_ids.device)[None] < lengths[:, None]
            token_mask = token_mask.unsqueeze(1).float()
        t_en = self.text_encoder(input_ids, lengths, token_mask)
        asr = t_en @ alignment
        spec = self.decoder(asr, f0, energy, s_a, frame_lengths)
        return spec, f0, energy

    def _split_style(self, ref_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.config.style_dim
        return ref_s[:, :n], ref_s[:, n:]

    # -- inference ------------------------------------------------------------------------------

    def check_inputs(
        self, input_ids: torch.Tensor, ref_s: torch.Tensor, lengths: torch.Tensor | None
    ) -> None:
        if input_ids.ndim != 2 or input_ids.shape[1] < 3:
            raise ModelInputError(
                f"input_ids must be [batch, tokens] with at least one phoneme between the boundary tokens, "
                f"got shape {tuple(input_ids.shape)}"
            )
        limit = self.config.plbert.max_position_embeddings
        if input_ids.shape[1] > limit:
            raise ModelInputError(
                f"{input_ids.shape[1]} tokens exceed the model's {limit} positions "
                f"(at most {limit - 2} phonemes per call); split the text into chunks"
            )
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.n_token:
            raise ModelInputError(
                f"token ids must lie in [0, {self.config.n_token}), got {input_ids.min()}..{input_ids.max()}"
            )
        want = 2 * self.config.style_dim
        if ref_s.ndim != 2 or ref_s.shape != (input_ids.shape[0], want):
            raise ModelInputError(
                f"style must be [batch, {want}] (one voice row per utterance), got {tuple(ref_s.shape)}"
            )
        if not bool(torch.isfinite(ref_s).all()):
            raise ModelInputError("style vector contains NaN or infinite values")
        if lengths is not None and (int(lengths.min()) < 3 or int(lengths.max()) > input_ids.shape[1]):
            raise ModelInputError(f"lengths must lie in [3, {input_ids.shape[1]}], got {lengths.tolist()}")

    @torch.no_grad()
    def synthesize(
        self,
        input_ids: torch.Tensor,
        ref_s: torch.Tensor,
        speed: float | torch.Tensor = 1.0,
        lengths: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Tokens (already wrapped in boundary tokens) and voice rows -> audio.

        input_ids [B, T] long, right-padded when ``lengths`` [B] is given; ref_s [B, V]; speed a
        float or [B]. ``durations`` [B, T] forces the frames per token (parity checks, editing).
        Batched results equal the one-at-a-time results: every padded step is masked.
        """
        input_ids = input_ids.to(self.device)
        ref_s = ref_s.to(self.device, torch.float32)
        batch = input_ids.shape[0]
        if lengths is not None:
            lengths = lengths.to(self.device)
            if bool((lengths == input_ids.shape[1]).all()):
                lengths = None
        self.check_inputs(input_ids, ref_s, lengths)
        speed_t = torch.as_tensor(speed, dtype=torch.float32, device=self.device).reshape(-1).expand(batch)
        if not bool((speed_t > 0).all()) or not bool(torch.isfinite(speed_t).all()):
            raise ModelInputError(f"speed must be a positive number, got {speed}")
        _, s_p = self._split_style(ref_s)
        d, logits = self.prosody_features(input_ids, lengths, s_p)
        if durations is None:
            dur = self.durations_from_logits(logits, speed_t, lengths)
        else:
            dur = durations.to(self.device).long()
        frames = dur.sum(dim=1)
        frame_lengths = None if batch == 1 or bool((frames == frames.max()).all()) else frames
        alignment = alignment_from_durations(dur)
        spec, f0, energy = self.acoustic(input_ids, lengths, d, alignment, ref_s, frame_lengths)
        gen = self.decoder.generator
        if frame_lengths is None:
            audio = gen.spectrogram_to_audio(spec)
        else:
            audio = spec.new_zeros(batch, int(frames.max()) * self.config.samples_per_frame)
            for b, n in enumerate(frame_lengths.tolist()):
                n_spec = n * self.config.samples_per_frame // gen.hop + 1
                item = gen.spectrogram_to_audio(spec[b : b + 1, :, :n_spec])
                audio[b, : item.shape[-1]] = item[0]
        token_lengths = (
            lengths if lengths is not None else torch.full((batch,), input_ids.shape[1], device=self.device)
        )
        return ModelOutput(
            audio=audio,
            audio_lengths=frames * self.config.samples_per_frame,
            durations=dur,
            token_lengths=token_lengths,
            f0=f0,
            energy=energy,
        )

    def fold_weight_norm(self) -> KokoroModel:
        """Replace weight-norm parametrisations by plain weights (faster inference, same outputs)."""
        from torch.nn.utils import parametrize

        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self
