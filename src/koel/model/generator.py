"""iSTFTNet generator with a harmonic-plus-noise (hn-NSF) source, and the decoder in front of it.

Shapes: B batch, F duration frames (25 ms), S samples (600 per frame at 24 kHz), C channels.
The decoder runs at F and 2F steps; the generator upsamples 2F -> 20F -> 120F + 1 STFT frames
(hop 5), and the iSTFT gives S = 600 F samples.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from koel.config import ISTFTNetConfig
from koel.constants import SAMPLE_RATE
from koel.model.layers import AdaIN1d, AdainResBlk1d, apply_mask, raw_weight, wn_conv1d, wn_conv_transpose1d
from koel.model.stft import ConvSTFT


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Snake activation x + sin^2(alpha x) / alpha (periodic inductive bias for waveforms)."""
    return x + torch.sin(alpha * x).pow(2) / alpha


class AdaINResBlock1(nn.Module):
    """HiFi-GAN resblock 1 with AdaIN and Snake: three dilated conv pairs with residuals."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], style_dim: int) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            [
                wn_conv1d(channels, channels, kernel_size, 1, dilation=d, padding=d * (kernel_size - 1) // 2)
                for d in dilations
            ]
        )
        self.convs2 = nn.ModuleList(
            [wn_conv1d(channels, channels, kernel_size, 1, padding=(kernel_size - 1) // 2) for _ in dilations]
        )
        self.adain1 = nn.ModuleList([AdaIN1d(style_dim, channels) for _ in dilations])
        self.adain2 = nn.ModuleList([AdaIN1d(style_dim, channels) for _ in dilations])
        self.alpha1 = nn.ParameterList([nn.Parameter(torch.ones(1, channels, 1)) for _ in dilations])
        self.alpha2 = nn.ParameterList([nn.Parameter(torch.ones(1, channels, 1)) for _ in dilations])
        for conv in [*self.convs1, *self.convs2]:
            nn.init.normal_(raw_weight(conv), 0.0, 0.01)

    def forward(self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for c1, c2, n1, n2, a1, a2 in zip(
            self.convs1, self.convs2, self.adain1, self.adain2, self.alpha1, self.alpha2, strict=False
        ):
            t = c1(apply_mask(snake(n1(x, s, mask), a1), mask))
            t = c2(apply_mask(snake(n2(t, s, mask), a2), mask))
            x = x + t
        return x


class SourceModuleHnNSF(nn.Module):
    harmonics: torch.Tensor
    """Harmonic source: 9 sinusoids at multiples of F0, merged by a linear layer and tanh.

    The official PyTorch model adds random initial phases and noise; the official ONNX export (and
    koel by default) is deterministic. Set ``stochastic=True`` for training as in StyleTTS2.
    """

    def __init__(
        self,
        upsample_scale: int,
        harmonic_num: int = 8,
        sine_amp: float = 0.1,
        noise_std: float = 0.003,
        voiced_threshold: float = 10.0,
        sampling_rate: int = SAMPLE_RATE,
    ) -> None:
        super().__init__()
        self.upsample_scale = upsample_scale
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.sampling_rate = sampling_rate
        self.register_buffer(
            "harmonics", torch.arange(1, harmonic_num + 2, dtype=torch.float32), persistent=False
        )
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.stochastic = False
        self.block_frames = 400  # F0 frames per block of per-sample work (5 s at Kokoro's rates)

    def forward(self, f0: torch.Tensor) -> torch.Tensor:
        """f0 [B, L] (Hz, one value per upsample_scale samples) -> source [B, L * upsample_scale]."""
        # Phase increments per sample, integrated at the F0 rate and interpolated back up. This is
        # the official computation without its nearest-up/linear-down round trip, which is exact.
        rad = (f0[:, :, None] * self.harmonics / self.sampling_rate) % 1.0  # [B, L, H]
        if self.stochastic:
            rand_ini = torch.rand(rad.shape[0], 1, rad.shape[2], device=rad.device)
            rand_ini[..., 0] = 0
            rad = torch.cat([rad[:, :1] + rand_ini, rad[:, 1:]], dim=1)
        phase = (torch.cumsum(rad, dim=1) * (2 * math.pi * self.upsample_scale)).transpose(1, 2)  # [B, H, L]
        length = f0.shape[1]
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()  # a loop would be unrolled
        if self.stochastic or tracing or length <= self.block_frames:
            return self._samples(phase, f0)
        # Per-sample tensors are 9 harmonics x 24,000 samples per second: made in blocks of
        # block_frames F0 frames, each interpolated with one frame of context on either side (all
        # that linear interpolation reads), so a long utterance never holds them whole. The same
        # arithmetic up to float32 rounding of the interpolation positions, which the phase (10^5 to
        # 10^6 radians after a few seconds) amplifies to ~1e-3 in the source (amplitude 0.1).
        u, pieces = self.upsample_scale, []
        for a in range(0, length, self.block_frames):
            b = min(length, a + self.block_frames)
            lo, hi = max(0, a - 1), min(length, b + 1)
            out = self._samples(phase[..., lo:hi], f0[:, lo:hi])
            pieces.append(out[:, (a - lo) * u : (b - lo) * u])
        return torch.cat(pieces, dim=1)

    def _samples(self, phase: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        """Integrated phase [B, H, L] at the F0 rate -> merged harmonic source [B, L * upsample_scale]."""
        phase = F.interpolate(phase, scale_factor=float(self.upsample_scale), mode="linear")
        sines = self.sine_amp * torch.sin(phase)  # [B, H, S]
        uv = (f0 > self.voiced_threshold).float().repeat_interleave(self.upsample_scale, dim=1)[:, None, :]
        sines = sines * uv
        if self.stochastic:
            noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
            sines = sines + noise_amp * torch.randn_like(sines)
        return torch.tanh(self.l_linear(sines.transpose(1, 2))).squeeze(-1)


class Generator(nn.Module):
    def __init__(self, style_dim: int, cfg: ISTFTNetConfig) -> None:
        super().__init__()
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.num_upsamples = len(cfg.upsample_rates)
        self.n_fft = cfg.gen_istft_n_fft
        self.hop = cfg.gen_istft_hop_size
        self.upsample_scale = math.prod(cfg.upsample_rates) * cfg.gen_istft_hop_size
        self.m_source = SourceModuleHnNSF(upsample_scale=self.upsample_scale)
        self.noise_convs = nn.ModuleList()
        self.noise_res = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=False)):
            c_in = cfg.upsample_initial_channel // 2**i
            c_out = c_in // 2
            self.ups.append(wn_conv_transpose1d(c_in, c_out, k, u, padding=(k - u) // 2))
            if i + 1 < self.num_upsamples:
                stride_f0 = math.prod(cfg.upsample_rates[i + 1 :])
                self.noise_convs.append(
                    nn.Conv1d(
                        self.n_fft + 2,
                        c_out,
                        kernel_size=2 * stride_f0,
                        stride=stride_f0,
                        padding=(stride_f0 + 1) // 2,
                    )
                )
                self.noise_res.append(AdaINResBlock1(c_out, 7, (1, 3, 5), style_dim))
            else:
                self.noise_convs.append(nn.Conv1d(self.n_fft + 2, c_out, kernel_size=1))
                self.noise_res.append(AdaINResBlock1(c_out, 11, (1, 3, 5), style_dim))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=False):
                self.resblocks.append(AdaINResBlock1(c_out, rk, tuple(rd), style_dim))
        self.conv_post = wn_conv1d(c_out, self.n_fft + 2, 7, 1, padding=3)
        self.stft = ConvSTFT(self.n_fft, self.hop)

    def harmonic_features(self, f0: torch.Tensor, f0_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """F0 [B, 2F] -> STFT magnitude and phase of the harmonic source [B, n_fft + 2, 120F + 1].

        With ``f0_lengths`` each utterance is transformed on its own length (the STFT's reflect
        padding must see the utterance's own end) and the rest is zero.
        """
        if f0_lengths is None:
            return torch.cat(self.stft.transform(self.m_source(f0)), dim=1)
        frames = f0.shape[1] * self.upsample_scale // self.hop + 1
        har = f0.new_zeros(f0.shape[0], self.n_fft + 2, frames)
        for b, n in enumerate(f0_lengths.tolist()):
            item = torch.cat(self.stft.transform(self.m_source(f0[b : b + 1, :n])), dim=1)
            har[b, :, : item.shape[-1]] = item[0]
        return har

    def forward(
        self,
        x: torch.Tensor,
        s: torch.Tensor,
        f0: torch.Tensor | None,
        f0_lengths: torch.Tensor | None = None,
        har: torch.Tensor | None = None,
        last_stage: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """x [B, C, 2F], style [B, S], f0 [B, 2F] -> spectrogram logits [B, n_fft + 2, 120F + 1].

        ``har`` passes precomputed harmonic features (then ``f0`` is unused): a time tile of the
        utterance's source keeps the phase the whole utterance gives it. The iSTFT is applied by
        :meth:`spectrogram_to_audio` (per utterance when batched).

        ``last_stage = (a, b)`` runs the last upsampling stage on input frames ``a:b`` only (unpadded
        batches): the logits are those of frames a:b, [B, n_fft + 2, 60 (b - a) + 1], exact away from
        the cut edges by :meth:`last_stage_reach` frames. A time tile whose outer frames are there only
        as context for the earlier stages skips them in the last, most expensive one.
        """
        har = self.source_features(f0, f0_lengths, har)
        masks = self.step_masks(x, f0_lengths)
        hars = self.stage_sources(x, har, last_stage, f0_lengths)
        for i in range(self.num_upsamples):
            if last_stage is not None and i == self.num_upsamples - 1:
                x = self.crop_last_stage(x, last_stage)
            x = apply_mask(F.leaky_relu(x, 0.1), masks[i])
            x_source = self.noise_res[i](self.noise_convs[i](hars[i]), s, masks[i + 1])
            x = self.ups[i](x)
            if i == self.num_upsamples - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + x_source
            xs = self.resblocks[i * self.num_kernels](x, s, masks[i + 1])
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x, s, masks[i + 1])
            x = xs / self.num_kernels
        x = apply_mask(F.leaky_relu(x, 0.01), masks[-1])
        return self.conv_post(x)

    def source_features(
        self, f0: torch.Tensor | None, f0_lengths: torch.Tensor | None, har: torch.Tensor | None
    ) -> torch.Tensor:
        """``har`` if given, else the harmonic features of ``f0``."""
        if har is not None:
            return har
        if f0 is None:
            raise ValueError("the generator needs f0 or precomputed harmonic features")
        return self.harmonic_features(f0, f0_lengths)

    def stage_sources(
        self,
        x: torch.Tensor,
        har: torch.Tensor,
        last_stage: tuple[int, int] | None,
        f0_lengths: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The harmonic features each stage's noise branch reads: ``har``, or for the last stage its
        frames ``last_stage`` (checked against ``x``'s input frames)."""
        hars = [har] * self.num_upsamples
        if last_stage is None:
            return hars
        a, b = last_stage
        frames = x.shape[-1]
        if f0_lengths is not None:
            raise ValueError("last_stage needs an unpadded batch (no f0_lengths)")
        if not 0 <= a < b <= frames:
            raise ValueError(f"last_stage frames {a}:{b} must lie within the input's {frames}")
        per = (har.shape[-1] - 1) // frames
        hars[-1] = har[..., per * a : per * b + 1]
        return hars

    def crop_last_stage(self, x: torch.Tensor, last_stage: tuple[int, int]) -> torch.Tensor:
        """The last stage's input (after every earlier stage) cut to input frames ``last_stage``."""
        rate = math.prod(self.ups_rates()[:-1])
        return x[..., rate * last_stage[0] : rate * last_stage[1]]

    def last_stage_reach(self) -> int:
        """Input frames (80 Hz) by which the last stage's output depends on its input on either side:
        its upsampler, its noise branch or resblocks (both feed the resblocks' sum), conv_post and the
        iSTFT's overlap, rounded up with a step to spare."""

        def resblock_reach(block: nn.Module) -> int:
            convs = [*cast(nn.ModuleList, block.convs1), *cast(nn.ModuleList, block.convs2)]
            return sum(int(c.dilation[0]) * (int(c.kernel_size[0]) - 1) // 2 for c in convs)

        k = self.num_kernels
        up = self.ups[-1]
        steps = (
            max(int(up.kernel_size[0]), resblock_reach(self.noise_res[-1]))  # type: ignore[index]
            + max(resblock_reach(b) for b in list(self.resblocks)[-k:])
            + (int(self.conv_post.kernel_size[0]) - 1) // 2  # type: ignore[index]
            + self.n_fft // self.hop
            + 1
        )
        per = math.prod(self.ups_rates())  # last-stage steps per input frame
        return -(-steps // per)

    def step_masks(self, x: torch.Tensor, f0_lengths: torch.Tensor | None) -> list[torch.Tensor | None]:
        """Valid-step masks [B, 1, width] at the input rate and after each upsampling (None: unpadded)."""
        masks: list[torch.Tensor | None] = [None] * (self.num_upsamples + 1)
        if f0_lengths is not None:
            rate = 1
            for i, u in enumerate([1, *self.ups_rates()]):
                rate *= u
                last = 1 if i == self.num_upsamples else 0  # the final stage is padded by one step
                steps, width = f0_lengths * rate + last, x.shape[-1] * rate + last
                masks[i] = (torch.arange(width, device=x.device)[None] < steps[:, None]).unsqueeze(1).float()
        return masks

    def ups_rates(self) -> list[int]:
        return [int(up.stride[0]) for up in self.ups]  # type: ignore[index]

    def spectrogram_to_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """Generator output [B, n_fft + 2, N] -> audio [B, hop * (N - 1)]: exp magnitude, sin phase."""
        n_bins = self.n_fft // 2 + 1
        return self.stft.inverse(torch.exp(spec[:, :n_bins]), torch.sin(spec[:, n_bins:]))


class Decoder(nn.Module):
    """Aligned text features + F0 + energy + acoustic style -> spectrogram logits (via Generator)."""

    def __init__(self, dim_in: int, style_dim: int, cfg: ISTFTNetConfig, dim: int = 1024, asr_dim: int = 64):
        super().__init__()
        self.encode = AdainResBlk1d(dim_in + 2, dim, style_dim)
        cat_dim = dim + 2 + asr_dim
        self.decode = nn.ModuleList(
            [AdainResBlk1d(cat_dim, dim, style_dim) for _ in range(3)]
            + [AdainResBlk1d(cat_dim, cfg.upsample_initial_channel, style_dim, upsample=True)]
        )
        self.F0_conv = wn_conv1d(1, 1, kernel_size=3, stride=2, groups=1, padding=1)
        self.N_conv = wn_conv1d(1, 1, kernel_size=3, stride=2, groups=1, padding=1)
        self.asr_res = nn.Sequential(wn_conv1d(dim_in, asr_dim, kernel_size=1))
        self.generator = Generator(style_dim, cfg)

    def forward(
        self,
        asr: torch.Tensor,
        f0: torch.Tensor,
        energy: torch.Tensor,
        s: torch.Tensor,
        frame_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """asr [B, D, F], f0/energy [B, 2F], s [B, S] -> spectrogram logits [B, n_fft + 2, 120F + 1]."""
        mask = up_mask = None
        if frame_lengths is not None:
            steps = torch.arange(asr.shape[-1], device=asr.device)
            mask = (steps[None] < frame_lengths[:, None]).unsqueeze(1).float()
            up_mask = mask.repeat_interleave(2, dim=-1)
        f0c = apply_mask(self.F0_conv(f0.unsqueeze(1)), mask)
        nc = apply_mask(self.N_conv(energy.unsqueeze(1)), mask)
        x = self.encode(torch.cat([asr, f0c, nc], dim=1), s, mask)
        asr_res = self.asr_res(asr)
        for block in self.decode:
            x = block(torch.cat([x, asr_res, f0c, nc], dim=1), s, mask)
        f0_lengths = None if frame_lengths is None else 2 * frame_lengths
        return self.generator(apply_mask(x, up_mask), s, f0, f0_lengths)
