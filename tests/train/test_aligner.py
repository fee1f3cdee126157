"""Aligner: MAS is the exact best monotonic path, and training recovers known durations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from koel.train.aligner import AlignerNet, beta_binomial_log_prior, forward_sum_loss, monotonic_alignment


def _brute_force(logp: np.ndarray) -> tuple[float, np.ndarray]:
    n_f, n_t = logp.shape
    best, best_d = -np.inf, None
    for cuts in itertools.combinations(range(1, n_f), n_t - 1):
        bounds = (0, *cuts, n_f)
        d = np.diff(bounds)
        score = sum(logp[bounds[i] : bounds[i + 1], i].sum() for i in range(n_t))
        if score > best:
            best, best_d = score, d
    assert best_d is not None
    return best, best_d


@pytest.mark.parametrize("seed", range(5))
def test_mas_is_the_best_monotonic_path(seed):
    rng = np.random.default_rng(seed)
    logp = rng.normal(size=(9, 4))
    d = monotonic_alignment(logp)
    assert d.sum() == 9 and (d >= 1).all()
    bounds = np.concatenate([[0], np.cumsum(d)])
    score = sum(logp[bounds[i] : bounds[i + 1], i].sum() for i in range(4))
    best, _ = _brute_force(logp)
    assert score == pytest.approx(best)


def test_mas_needs_enough_frames():
    with pytest.raises(ValueError, match="cannot align"):
        monotonic_alignment(np.zeros((3, 5)))


def test_prior_is_a_distribution_along_the_diagonal():
    prior = beta_binomial_log_prior(10, 40).exp()
    assert torch.allclose(prior.sum(1), torch.ones(40), atol=1e-4)
    peaks = prior.argmax(1)
    assert int(peaks[0]) == 0 and int(peaks[-1]) == 9 and bool((peaks[1:] >= peaks[:-1]).all())


def test_training_recovers_known_durations():
    """Frames made from per-token 'spectra' repeated by known durations: the aligner finds them."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_symbols, n_mels = 24, 20
    spectra = torch.randn(n_symbols, n_mels)
    items = []
    for _ in range(16):
        # distinct symbols: runs of one repeated symbol would make the split inside the run unknowable
        tokens = torch.from_numpy(rng.permutation(np.arange(1, n_symbols))[:12])
        durs = torch.from_numpy(rng.integers(1, 7, 12))
        mel = spectra[tokens].repeat_interleave(durs, 0).T + 0.1 * torch.randn(n_mels, int(durs.sum()))
        items.append((tokens, durs, mel))
    net = AlignerNet(n_mels=n_mels, channels=32, n_token=n_symbols)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(150):
        tokens, durs, mel = items[step % len(items)]
        prior = beta_binomial_log_prior(len(tokens), mel.shape[-1])[None]
        logp = net(tokens[None], mel[None], torch.tensor([len(tokens)]), torch.tensor([mel.shape[-1]]), prior)
        loss = forward_sum_loss(logp, torch.tensor([len(tokens)]), torch.tensor([mel.shape[-1]]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    errors, uniform = [], []
    with torch.no_grad():
        for tokens, durs, mel in items[:8]:
            prior = beta_binomial_log_prior(len(tokens), mel.shape[-1])[None]
            logp = net(
                tokens[None], mel[None], torch.tensor([len(tokens)]), torch.tensor([mel.shape[-1]]), prior
            )[0]
            errors.append(np.abs(monotonic_alignment(logp.numpy()) - durs.numpy()).mean())
            uniform.append(np.abs(mel.shape[-1] / len(tokens) - durs.numpy()).mean())
    assert np.mean(errors) < 0.4 * np.mean(uniform), (
        f"mean duration error {np.mean(errors):.2f} frames (uniform split: {np.mean(uniform):.2f})"
    )
