"""The one trainer: data, aligner, model, discriminators, DDP, mixed precision, checkpoints, logs.

Run it with ``koel train CONFIG`` on one device, or under ``torchrun`` for several GPUs/nodes
(``torchrun --nproc_per_node 8 -m koel.train.cli CONFIG``): the process group is read from the
environment torchrun sets (gloo on CPU, NCCL on GPU). A step draws one global batch, split over
ranks and ``grad_accum`` micro-batches; every loss is a per-utterance mean, so the loss and the
update do not depend on the split.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from koel.constants import SAMPLE_RATE
from koel.train.aligner import align, train_aligner
from koel.train.checkpoint import export_model, latest_state, load_state, save_state
from koel.train.config import ConfigError, TrainConfig
from koel.train.dataset import (
    Batch,
    GlobalBatchSampler,
    Item,
    PreparedData,
    TrainDataset,
    collate,
    prepare_dataset,
)
from koel.train.discriminators import Discriminators
from koel.train.losses import discriminator_loss, feature_matching_loss, generator_loss
from koel.train.setup import Distributed, build_model, initial_pack, stable_hash
from koel.train.step import TrainingModel, VoiceBank, crop_starts

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run did: steps, wall time and the logged loss curves (rank 0)."""

    step: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    export_dir: Path | None = None


class Trainer:
    """Build everything from a TrainConfig; :meth:`fit` trains, :meth:`export` writes the result."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        run = cfg.run
        if run.threads:
            torch.set_num_threads(run.threads)
        self.dist = Distributed(run.device)
        self.device = self.dist.device
        self.out = Path(run.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(cfg.to_json())
        self.dtype = self._precision()
        self.data = self._prepare_data()
        self.durations = self._durations()
        self.train_items = self._fit_crop(self.data.train, "train")
        self.val_items = self._fit_crop(self.data.val, "validation")

        model = build_model(cfg, self.device)
        voice_dim = 2 * model.config.style_dim
        base = initial_pack(cfg, voice_dim)[None].expand(len(self.data.speakers), -1, -1)
        voices = VoiceBank(base).to(self.device)
        voices.requires_grad_(cfg.model.train_voice)
        self.module = TrainingModel(model, voices, run.crop_frames).to(self.device)
        self.disc = (
            Discriminators(cfg.loss.periods, cfg.loss.disc_width).to(self.device)
            if cfg.loss.adversarial
            else None
        )
        self.opt_g = self._generator_optimizer()
        self.opt_d = (
            torch.optim.AdamW(
                self.disc.parameters(),
                lr=cfg.optim.disc_lr,
                betas=cfg.optim.betas,
                weight_decay=cfg.optim.weight_decay,
            )
            if self.disc is not None
            else None
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.step = 0
        self._resume()
        self.ddp_g: nn.Module = self.module
        self.ddp_d: nn.Module | None = self.disc
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_g = DDP(self.module, device_ids=ids)
            self.ddp_d = DDP(self.disc, device_ids=ids) if self.disc is not None else None

    # -- setup ------------------------------------------------------------------------------------------

    def _precision(self) -> torch.dtype:
        choice = self.cfg.run.precision
        if choice == "auto":
            if self.device.type != "cuda":
                return torch.float32
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if choice != "fp32" and self.device.type != "cuda":
            raise ConfigError(f"run.precision={choice} needs a GPU; use fp32 (or auto) on {self.device}")
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]

    def _prepare_data(self) -> PreparedData:
        cache = Path(self.cfg.data.cache_dir) if self.cfg.data.cache_dir else self.out / "cache"
        self.cache = cache
        data = prepare_dataset(self.cfg.data, cache, self.dist.rank, self.dist.world_size, self.dist.barrier)
        if self.dist.main:
            (self.out / "data_report.txt").write_text(data.report.summary() + "\n")
            log.info(
                "data: %d train, %d validation clips; %s",
                len(data.train),
                len(data.val),
                data.report.summary().splitlines()[0],
            )
        return data

    def _durations(self) -> dict[str, torch.Tensor]:
        """Aligner durations for every clip: trained once on rank 0 and cached by config and data."""
        from safetensors.torch import load_file, save_file

        items = self.data.train + self.data.val
        key = stable_hash([self.cfg.aligner.__dict__, self.cfg.run.seed, [i.cache_file for i in items]])
        path = self.cache / f"durations-{key}.safetensors"
        if self.dist.main and not path.exists():
            net, losses = train_aligner(
                [i.cache_file for i in self.data.train], self.cfg.aligner, self.cfg.run.seed
            )
            durations = {
                i.id: torch.from_numpy(align(net, i.cache_file, self.cfg.aligner.prior_scale)[0])
                for i in items
            }
            torch.save(net.state_dict(), self.cache / f"aligner-{key}.pt")
            (self.cache / f"aligner-{key}-loss.json").write_text(json.dumps(losses))
            tmp = path.with_suffix(".tmp")
            save_file(durations, str(tmp))
            os.replace(tmp, path)
        self.dist.barrier()
        self.aligner_file = self.cache / f"aligner-{key}.pt"
        return load_file(str(path))

    def _fit_crop(self, items: list[Item], split: str) -> list[Item]:
        kept = [i for i in items if i.frames >= self.cfg.run.crop_frames]
        if len(kept) < len(items) and self.dist.main:
            log.warning(
                "%s: %d clips shorter than run.crop_frames=%d are skipped",
                split,
                len(items) - len(kept),
                self.cfg.run.crop_frames,
            )
        return kept

    def _generator_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        bert, voice, decoder, rest = [], [], [], []
        for name, p in self.module.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("voices."):
                voice.append(p)
            elif name.startswith("model.bert."):
                bert.append(p)
            elif name.startswith("model.decoder."):
                decoder.append(p)
            else:
                rest.append(p)
        groups = [
            {"params": rest, "lr": o.lr, "betas": o.betas, "weight_decay": o.weight_decay, "base_lr": o.lr},
            {
                "params": decoder,
                "lr": o.decoder_lr,
                "betas": o.betas,
                "weight_decay": o.weight_decay,
                "base_lr": o.decoder_lr,
            },
            {
                "params": bert,
                "lr": o.bert_lr,
                "betas": (0.9, 0.99),
                "weight_decay": 0.01,
                "base_lr": o.bert_lr,
            },
            {
                "params": voice,
                "lr": o.voice_lr,
                "betas": (0.9, 0.99),
                "weight_decay": 0.0,
                "base_lr": o.voice_lr,
            },
        ]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ConfigError("nothing to train: model.train_modules is empty and model.train_voice is false")
        return torch.optim.AdamW(groups, eps=o.eps)

    # -- checkpoints --------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.module.model.state_dict(),
            "voices": self.module.voices.state_dict(),
            "speakers": self.data.speakers,
            "disc": self.disc.state_dict() if self.disc is not None else {},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else {},
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "config": self.cfg.to_json(),
        }

    def save(self) -> Path | None:
        if not self.dist.main:
            return None
        return save_state(self.ckpt_dir, self.step, self.state(), self.cfg.run.keep_checkpoints)

    def _resume(self) -> None:
        path = latest_state(self.ckpt_dir)
        if path is None:
            return
        state = load_state(path, self.device)
        self.module.model.load_state_dict(state["model"])
        self.module.voices.load_state_dict(state["voices"])
        if self.disc is not None and state["disc"]:
            self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.opt_d is not None and state["opt_d"]:
            self.opt_d.load_state_dict(state["opt_d"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)

    # -- training --------------------------------------------------------------------------------------------

    def _loader(self) -> torch.utils.data.DataLoader:
        run = self.cfg.run
        sampler = GlobalBatchSampler(
            len(self.train_items),
            run.batch_size,
            self.dist.world_size,
            self.dist.rank,
            run.grad_accum,
            run.seed,
            self.step,
            run.max_steps,
        )
        dataset = TrainDataset(self.train_items, self.durations, self.data.speakers)
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=run.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(run.seed + self.step),  # keeps the global RNG untouched
        )

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _set_lr(self) -> None:
        warm = self.cfg.optim.warmup_steps
        factor = min(1.0, (self.step + 1) / warm) if warm > 0 else 1.0
        for group in self.opt_g.param_groups:
            group["lr"] = group["base_lr"] * factor

    def train_step(self, micro_batches: list[Batch]) -> dict[str, float]:
        """One optimiser step over this rank's micro-batches; returns rank-averaged loss values."""
        cfg, loss_w = self.cfg, self.cfg.loss
        adversarial = self.disc is not None and self.step >= loss_w.disc_start_step
        logged: dict[str, float] = {}
        n_micro = len(micro_batches)
        self.ddp_g.train(cfg.model.dropout)  # dropout off = eval mode: deterministic steps
        for m, batch in enumerate(micro_batches):
            last = m == n_micro - 1
            batch = batch.to(self.device)
            starts = crop_starts(batch, cfg.run.crop_frames, cfg.run.seed, self.step)
            sync_g = nullcontext() if last or not self.dist.enabled else self.ddp_g.no_sync()  # type: ignore[operator]
            with sync_g:
                with self._autocast():
                    out = self.ddp_g(batch, starts)
                terms = {k: v.mean() for k, v in out.losses.items()}
                if adversarial:
                    assert self.disc is not None and self.ddp_d is not None
                    sync_d = nullcontext() if last or not self.dist.enabled else self.ddp_d.no_sync()  # type: ignore[operator]
                    with sync_d:
                        with self._autocast():
                            logits, _ = self.ddp_d(torch.cat([out.real, out.fake.detach()]))
                        real = [x[: len(batch)] for x in logits]
                        fake = [x[len(batch) :] for x in logits]
                        d_loss = discriminator_loss(real, fake, loss_w.tprls_tau).mean()
                        self.scaler.scale(d_loss / n_micro).backward()
                    logged["disc"] = logged.get("disc", 0.0) + float(d_loss.detach()) / n_micro
                    self.disc.requires_grad_(False)
                    with self._autocast():
                        logits_f, feats_f = self.disc(out.fake)
                        logits_r, feats_r = self.disc(out.real)
                    terms["gen"] = generator_loss(logits_f, logits_r, loss_w.tprls_tau).mean()
                    terms["feature_matching"] = feature_matching_loss(feats_f, feats_r).mean()
                    self.disc.requires_grad_(True)
                weights = {
                    "mel": loss_w.mel,
                    "f0": loss_w.f0,
                    "energy": loss_w.energy,
                    "duration_ce": loss_w.duration_ce,
                    "duration_l1": loss_w.duration_l1,
                    "gen": loss_w.gen,
                    "feature_matching": loss_w.gen * loss_w.feature_matching,
                }
                total = sum(weights[k] * v for k, v in terms.items())
                assert isinstance(total, torch.Tensor)
                self.scaler.scale(total / n_micro).backward()
            for k, v in terms.items():
                logged[k] = logged.get(k, 0.0) + float(v.detach()) / n_micro
            logged["loss"] = logged.get("loss", 0.0) + float(total.detach()) / n_micro
        self._set_lr()
        self._optimizer_step(self.opt_g, self.module.parameters())
        if adversarial and self.opt_d is not None and self.disc is not None:
            self._optimizer_step(self.opt_d, self.disc.parameters())
        self.scaler.update()
        self.step += 1
        return self.dist.mean(logged)

    def _optimizer_step(self, opt: torch.optim.Optimizer, params) -> None:
        self.scaler.unscale_(opt)
        trainable = [p for p in params if p.grad is not None]
        if self.cfg.optim.grad_clip > 0 and trainable:
            nn.utils.clip_grad_norm_(trainable, self.cfg.optim.grad_clip)
        self.scaler.step(opt)
        opt.zero_grad(set_to_none=True)

    def fit(self) -> TrainResult:
        """Train from the current step to ``run.max_steps``; checkpoint, validate and log on the way."""
        run = self.cfg.run
        result = TrainResult(step=self.step)
        writer = self._writer()
        start = time.perf_counter()
        bar = None
        if self.dist.main and run.progress:
            from tqdm import tqdm

            bar = tqdm(total=run.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        pending: list[Batch] = []
        if self.step == 0 and self.step < run.max_steps:  # the starting point of the validation curve
            metrics = self.validate(writer)
            if metrics:
                result.validation.append({"step": 0, **metrics})
        try:
            for batch in self._loader():
                pending.append(batch)
                if len(pending) < run.grad_accum:
                    continue
                step_start = time.perf_counter()
                values = self.train_step(pending)
                pending = []
                values["step_seconds"] = time.perf_counter() - step_start
                if self.dist.main:
                    result.history.append({"step": self.step, **values})
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{values['loss']:.3f}", mel=f"{values['mel']:.3f}")
                    if writer is not None and (self.step % run.log_every == 0 or self.step == 1):
                        for k, v in values.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                    if self.step % run.log_every == 0:
                        log.info(
                            "step %d: %s", self.step, " ".join(f"{k}={v:.4f}" for k, v in values.items())
                        )
                if self.step % run.val_every == 0 or self.step == run.max_steps:
                    metrics = self.validate(writer)
                    if metrics:
                        result.validation.append({"step": self.step, **metrics})
                if self.step % run.ckpt_every == 0 or self.step == run.max_steps:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        result.step = self.step
        result.seconds = time.perf_counter() - start
        if self.dist.main:
            with open(self.out / "history.jsonl", "a") as f:
                for row in result.history:
                    f.write(json.dumps(row) + "\n")
            with open(self.out / "validation.jsonl", "a") as f:
                for row in result.validation:
                    f.write(json.dumps(row) + "\n")
        return result

    def _writer(self):
        if not (self.dist.main and self.cfg.run.tensorboard):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    # -- validation and export ------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, writer=None) -> dict[str, float]:
        """Losses on centred crops of the held-out clips, and synthesised samples (rank 0 only)."""
        if not self.dist.main or not self.val_items:
            return {}
        module = self.module
        was_training = module.training
        stochastic = module.model.decoder.generator.m_source.stochastic
        module.eval()
        module.model.decoder.generator.m_source.stochastic = False
        try:
            dataset = TrainDataset(self.val_items, self.durations, self.data.speakers)
            batch = collate([dataset[i] for i in range(len(dataset))]).to(self.device)
            starts = crop_starts(batch, self.cfg.run.crop_frames, 0, 0, deterministic=True)
            out = module(batch, starts)
            metrics = {k: float(v.mean()) for k, v in out.losses.items()}
            w = self.cfg.loss
            metrics["loss"] = (
                w.mel * metrics["mel"]
                + w.f0 * metrics["f0"]
                + w.energy * metrics["energy"]
                + w.duration_ce * metrics["duration_ce"]
                + w.duration_l1 * metrics["duration_l1"]
            )
            samples = self._samples(batch)
        finally:
            module.train(was_training)
            module.model.decoder.generator.m_source.stochastic = stochastic
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, self.step)
            for i, audio in enumerate(samples):
                writer.add_audio(f"val/sample{i}", audio[None], self.step, sample_rate=SAMPLE_RATE)
        folder = self.out / "samples" / f"step-{self.step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        import soundfile as sf

        for i, audio in enumerate(samples):
            sf.write(str(folder / f"{self.val_items[i].id}.wav"), audio.numpy(), SAMPLE_RATE)
        log.info("validation at step %d: %s", self.step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

    def _samples(self, batch: Batch) -> list[torch.Tensor]:
        """End-to-end synthesis of the first held-out texts with predicted durations and the learned voice."""
        model, voices = self.module.model, self.module.voices
        samples = []
        for b in range(min(self.cfg.run.val_samples, len(batch))):
            n = int(batch.lengths[b])
            ref = voices.rows(batch.speakers[b : b + 1], batch.n_phonemes[b : b + 1])
            out = model.synthesize(batch.ids[b : b + 1, :n], ref)
            samples.append(out.audio[0].float().cpu().clamp(-1, 1))
        return samples

    def export(self, directory: Path | None = None) -> Path | None:
        """Write the model as a koel checkpoint and every learned voice as a voice file (rank 0)."""
        if not self.dist.main:
            return None
        directory = directory or self.out / "export"
        voices = {}
        speakers = self.data.speakers
        for i, speaker in enumerate(speakers):
            name = (
                self.cfg.model.voice_name if len(speakers) == 1 else f"{self.cfg.model.voice_name}_{speaker}"
            )
            voices[name] = self.module.voices.pack(i)
        return export_model(self.module.model, voices, directory, extra={"trained_steps": self.step})

    def close(self) -> None:
        self.dist.close()


def train(cfg: TrainConfig, export: bool = True) -> TrainResult:
    """Build a Trainer, fit to ``run.max_steps`` and export; the whole ``koel train`` command."""
    trainer = Trainer(cfg)
    try:
        if trainer.dist.main:
            log.info(
                "training %s on %s x%d (%s), global batch %d, %d steps, crop %.2f s",
                cfg.model.init,
                trainer.device,
                trainer.dist.world_size,
                str(trainer.dtype).replace("torch.", ""),
                cfg.run.batch_size * trainer.dist.world_size * cfg.run.grad_accum,
                cfg.run.max_steps,
                cfg.run.crop_frames * 0.025,
            )
        result = trainer.fit()
        if export:
            result.export_dir = trainer.export()
        return result
    finally:
        trainer.close()


__all__ = ["TrainResult", "Trainer", "build_model", "train"]
