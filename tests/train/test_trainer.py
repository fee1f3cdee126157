"""The trainer on the tiny config: every loss back-propagates, resume is exact, DDP equals one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from koel.train.config import load_config
from koel.train.trainer import Trainer, train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def _cfg(corpus: Path, out: Path, *extra: str):
    return load_config(
        CONFIG,
        [
            f"data.path={corpus}",
            f"run.output_dir={out}",
            f"data.cache_dir={corpus.parent / 'cache'}",
            "run.threads=1",
            *extra,
        ],
    )


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_every_loss_reaches_its_modules(corpus, tmp_path):
    trainer = Trainer(_cfg(corpus, tmp_path / "run"))
    try:
        from koel.train.dataset import collate
        from koel.train.losses import discriminator_loss, feature_matching_loss, generator_loss
        from koel.train.step import crop_starts

        loader = trainer._loader()
        batch = next(iter(loader))
        out = trainer.module(batch, crop_starts(batch, trainer.cfg.run.crop_frames, 0, 0))
        logits_f, feats_f = trainer.disc(out.fake)
        logits_r, feats_r = trainer.disc(out.real)
        terms = dict(out.losses)
        terms["gen"] = generator_loss(logits_f, logits_r, 0.04)
        terms["feature_matching"] = feature_matching_loss(feats_f, feats_r)
        expected = {
            "mel": ["model.decoder", "model.text_encoder", "voices"],
            "f0": ["model.predictor", "model.bert", "voices"],
            "energy": ["model.predictor", "model.bert_encoder"],
            "duration_ce": ["model.predictor", "model.bert"],
            "duration_l1": ["model.predictor"],
            "gen": ["model.decoder"],
            "feature_matching": ["model.decoder"],
        }
        named = dict(trainer.module.named_parameters())
        for name, value in terms.items():
            assert value.shape == (len(batch),) and bool(torch.isfinite(value).all()), name
            params = [p for k, p in named.items() if p.requires_grad]
            grads = torch.autograd.grad(value.mean(), params, retain_graph=True, allow_unused=True)
            reached = {
                k
                for (k, p), g in zip([(k, p) for k, p in named.items() if p.requires_grad], grads)
                if g is not None and bool(g.abs().sum() > 0)
            }
            for prefix in expected[name]:
                assert any(k.startswith(prefix) for k in reached), f"{name} does not reach {prefix}"
        d_loss = discriminator_loss(
            [x.detach() for x in logits_r], [x for x in trainer.disc(out.fake.detach())[0]], 0.04
        )
        d_grads = torch.autograd.grad(d_loss.mean(), list(trainer.disc.parameters()), allow_unused=True)
        assert sum(int(g is not None and bool(g.abs().sum() > 0)) for g in d_grads) > 0.9 * len(d_grads)
        del collate

        # and one full optimiser step logs every term and changes every trained module
        before = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
        disc_before = [p.detach().clone() for p in trainer.disc.parameters()]
        values = trainer.train_step([batch])
        assert {
            "mel",
            "f0",
            "energy",
            "duration_ce",
            "duration_l1",
            "gen",
            "feature_matching",
            "disc",
            "loss",
        } <= set(values)
        assert all(torch.isfinite(torch.tensor(v)) for v in values.values())
        after = trainer.module.state_dict()
        for prefix in (
            "model.bert.",
            "model.bert_encoder.",
            "model.predictor.",
            "model.text_encoder.",
            "model.decoder.",
            "voices.",
        ):
            assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
        assert any(not torch.equal(a, b) for a, b in zip(disc_before, trainer.disc.parameters()))
    finally:
        trainer.close()


def test_resume_after_a_kill_continues_exactly(corpus, tmp_path):
    whole = tmp_path / "whole"
    train(_cfg(corpus, whole, "run.max_steps=4", "run.keep_checkpoints=5"), export=False)
    cut = tmp_path / "cut"
    train(_cfg(corpus, cut, "run.max_steps=2"), export=False)
    # the kill: the process is gone, a half-written checkpoint may be left behind
    (cut / "checkpoints" / ".step-xxxx.tmp").write_bytes(b"\x00" * 100)
    resumed = Trainer(_cfg(corpus, cut, "run.max_steps=4", "run.keep_checkpoints=5"))
    try:
        assert resumed.step == 2
        reference = torch.load(whole / "checkpoints" / "step-00000002.pt", weights_only=True)
        for (group_a, state_a), (group_b, state_b) in zip(
            sorted(reference["opt_g"]["state"].items()), sorted(resumed.opt_g.state_dict()["state"].items())
        ):
            assert group_a == group_b
            for key in state_a:
                assert torch.allclose(state_a[key], state_b[key]), f"optimiser state {group_a}.{key} differs"
        resumed.fit()
    finally:
        resumed.close()
    a = {r["step"]: r for r in _history(whole)}
    b = {r["step"]: r for r in _history(cut)}
    for step in (3, 4):
        for key in ("loss", "mel", "disc", "duration_ce"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5), f"step {step} {key}"
    final_a = torch.load(whole / "checkpoints" / "step-00000004.pt", weights_only=True)
    final_b = torch.load(cut / "checkpoints" / "step-00000004.pt", weights_only=True)
    for key, value in final_a["model"].items():
        assert torch.allclose(value, final_b["model"][key], atol=1e-6), key


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(corpus, tmp_path):
    """gloo DDP, 2 processes x batch 1, gives the losses (and updates) of 1 process with the same global batch.

    The one-process run takes its global batch of 2 as 2 accumulated micro-batches of 1, so each
    utterance goes through the same float32 kernels as in DDP. (A batch-2 forward is not bit-equal:
    the generator feeds the phase of its harmonic source's STFT to the network, and atan2 of bins
    that are numerically zero flips between +pi and -pi with the batch layout.)
    """
    single = tmp_path / "single"
    train(_cfg(corpus, single, "run.batch_size=1", "run.grad_accum=2"), export=False)
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "koel.train.cli", str(CONFIG),
        "--set", f"data.path={corpus}", "--set", f"run.output_dir={ddp}", "--set", f"data.cache_dir={corpus.parent / 'cache'}",
        "--set", "run.batch_size=1", "--set", "run.threads=1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _history(single), _history(ddp)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        for key in (
            "loss",
            "mel",
            "f0",
            "energy",
            "duration_ce",
            "duration_l1",
            "gen",
            "feature_matching",
            "disc",
        ):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (
                f"step {a['step']} {key}: one process {a[key]}, DDP {b[key]}"
            )


def test_export_loads_into_the_pipeline(corpus, tmp_path):
    from koel.backends.torch_engine import TorchEngine
    from koel.pipeline import Pipeline
    from koel.voices import Voice
    from koel.weights.loading import load_model

    result = train(_cfg(corpus, tmp_path / "run", "run.max_steps=1"))
    assert result.export_dir is not None
    model = load_model(result.export_dir)
    assert model.config.hidden_dim == 32  # the tiny config travelled with the weights
    pack = torch.load(result.export_dir / "voices" / "tiny_voice.pt", weights_only=True)
    assert pack.shape == (510, 1, 32)
    pipe = Pipeline(TorchEngine(model), voice=Voice("tiny_voice", pack[:, 0]), lang="a")
    utt = pipe.synthesize("Hello there.")
    assert utt.audio.size > 0 and bool(torch.isfinite(torch.from_numpy(utt.audio)).all())


def test_cli_prints_the_resolved_config(capsys):
    from koel.cli import main

    assert main(["train", str(CONFIG), "--set", "run.max_steps=9", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["max_steps"] == 9
