"""CRPS, pinball and coverage: against closed forms and an independent numpy reference, then masked per horizon."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from stlm.metrics.probabilistic import (
    DEFAULT_LEVELS,
    ProbabilisticMetrics,
    check_levels,
    crps_ensemble,
    crps_from_quantiles,
    interval_indices,
    pinball,
)


def gaussian_crps(mu: np.ndarray, sigma: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Closed form (Gneiting & Raftery 2007): sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)), z = (y - mu) / sigma."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))


def fair_crps_numpy(members: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fair CRPS by its definition, with explicit pairwise differences: members [..., M], y [...]."""
    M = members.shape[-1]
    skill = np.abs(members - y[..., None]).mean(-1)
    spread = np.abs(members[..., :, None] - members[..., None, :]).sum((-1, -2)) / (2 * M * (M - 1))
    return skill - spread


def test_crps_from_many_quantiles_equals_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=50), rng.uniform(0.3, 3.0, size=50)
    y = mu + sigma * rng.normal(size=50) * 1.5
    Q = 4000
    levels = (np.arange(Q) + 0.5) / Q
    quantiles = mu[:, None] + sigma[:, None] * norm.ppf(levels)[None, :]
    ours = crps_from_quantiles(torch.tensor(quantiles), torch.tensor(y), torch.tensor(levels)).numpy()
    np.testing.assert_allclose(ours, gaussian_crps(mu, sigma, y), atol=1e-3)


def test_crps_from_quantiles_is_twice_the_mean_pinball_loss():
    rng = np.random.default_rng(1)
    levels = torch.tensor(DEFAULT_LEVELS, dtype=torch.float64)
    quantiles = torch.tensor(np.sort(rng.normal(size=(30, len(levels))), axis=-1))
    y = torch.tensor(rng.normal(size=30))
    tau = levels.numpy()
    q, obs = quantiles.numpy(), y.numpy()[:, None]
    reference = (((obs < q).astype(float) - tau) * (q - obs)).mean(-1)  # pinball by its definition
    np.testing.assert_allclose(pinball(quantiles, y, levels).numpy(), reference, rtol=1e-12)
    np.testing.assert_allclose(crps_from_quantiles(quantiles, y, levels).numpy(), 2 * reference, rtol=1e-12)


def test_pinball_loss_keeps_the_gradient_for_training():
    levels = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    quantiles = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    pinball(quantiles, torch.ones(4, dtype=torch.float64), levels).sum().backward()
    # y above every quantile: d/dq (tau (y - q)) = -tau, averaged over the 3 levels.
    np.testing.assert_allclose(quantiles.grad.numpy(), np.tile(-levels.numpy() / 3, (4, 1)), rtol=1e-12)


def test_ensemble_crps_equals_the_numpy_reference():
    rng = np.random.default_rng(2)
    members = rng.normal(size=(6, 5, 11)) * rng.uniform(0.5, 2, size=(6, 5, 1))
    y = rng.normal(size=(6, 5))
    ours = crps_ensemble(torch.tensor(members), torch.tensor(y)).numpy()
    np.testing.assert_allclose(ours, fair_crps_numpy(members, y), rtol=1e-10, atol=1e-12)


def test_fair_ensemble_crps_is_unbiased_for_the_gaussian():
    """Many small ensembles drawn from N(0, 1): the fair CRPS averages to the closed form (the plain one does not)."""
    rng = np.random.default_rng(3)
    members = rng.normal(size=(40000, 4))
    y = np.full(40000, 0.7)
    mean_fair = crps_ensemble(torch.tensor(members), torch.tensor(y)).mean().item()
    assert mean_fair == pytest.approx(float(gaussian_crps(np.array(0.0), np.array(1.0), np.array(0.7))), abs=1e-2)
    with pytest.raises(ValueError, match="at least 2 members"):
        crps_ensemble(torch.zeros(3, 1), torch.zeros(3))


def test_levels_and_intervals_are_checked_with_the_fix_in_the_message():
    with pytest.raises(ValueError, match="model.quantiles.*strictly increasing"):
        check_levels([0.5, 0.1])
    with pytest.raises(ValueError, match="model.quantiles.*inside"):
        check_levels([0.0, 0.5])
    with pytest.raises(ValueError, match="0.05 and 0.95"):
        interval_indices(check_levels([0.1, 0.5, 0.9]), 0.9)
    assert interval_indices(check_levels(DEFAULT_LEVELS), 0.9) == (0, 18)


def _batch(B=3, H=4, N=5, C=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(B, H, N, C, generator=g)
    mask = (torch.rand(B, H, N, C, generator=g) > 0.2).float()
    return {"y": torch.where(mask > 0, y, torch.nan), "mask": mask}, y


def test_metrics_are_masked_weighted_means_per_horizon():
    batch, y = _batch()
    levels = check_levels(DEFAULT_LEVELS)
    spread = torch.tensor(norm.ppf(levels.numpy()), dtype=torch.float32)
    quantiles = y.unsqueeze(-1) * 0.5 + spread  # [B, H, N, C, Q]
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    metric = ProbabilisticMetrics(4, channels=("a", "b"), weights=weights, levels=DEFAULT_LEVELS)
    metric.update(quantiles, batch)
    out = metric.compute()
    wm = batch["mask"] * weights.view(1, 1, -1, 1)
    yy = torch.nan_to_num(batch["y"]).double()
    crps = crps_from_quantiles(quantiles.double(), yy, levels)
    covered = ((yy >= quantiles[..., 0]) & (yy <= quantiles[..., -1])).double()
    for h, key in enumerate(["h1", "h2", "h3", "h4"]):
        w = wm[:, h].double()
        assert out[f"crps_{key}"].item() == pytest.approx(((crps[:, h] * w).sum() / w.sum()).item(), rel=1e-6)
        assert out[f"coverage90_{key}"].item() == pytest.approx(((covered[:, h] * w).sum() / w.sum()).item(), rel=1e-6)
    width = float(spread[-1] - spread[0])
    assert out["width90_avg"].item() == pytest.approx(width, rel=1e-6)
    assert torch.isfinite(torch.stack(list(out.values()))).all()  # NaN under the mask never leaks


def test_a_calibrated_ensemble_covers_its_nominal_interval():
    g = torch.Generator().manual_seed(5)
    B, H, N, C, M = 200, 2, 8, 1, 50
    y = torch.randn(B, H, N, C, generator=g)
    members = torch.randn(B, H, N, C, M, generator=g)  # the same distribution as y, independent of it
    metric = ProbabilisticMetrics(H, levels=None, keys="lead", interval_minutes=360, average="lead_mean")
    metric.update(members, {"y": y, "mask": torch.ones_like(y)})
    out = metric.compute()
    assert 0.85 < out["coverage90_lead6h"].item() < 0.95
    assert out["crps_avg"].item() == pytest.approx(float(gaussian_crps(np.zeros(1), np.ones(1), y.numpy().ravel()).mean()), rel=0.05)
    assert "pinball_avg" not in out  # members have no levels


def test_sums_reduce_exactly_across_batches():
    levels = DEFAULT_LEVELS
    batch1, y1 = _batch(seed=1)
    batch2, y2 = _batch(seed=2)
    spread = torch.tensor(norm.ppf(levels), dtype=torch.float32)
    f1, f2 = y1.unsqueeze(-1) + spread, y2.unsqueeze(-1) * 0.3 + spread
    split = ProbabilisticMetrics(4, channels=("a", "b"), levels=levels)
    split.update(f1, batch1)
    split.update(f2, batch2)
    whole = ProbabilisticMetrics(4, channels=("a", "b"), levels=levels)
    whole.update(torch.cat([f1, f2]), {k: torch.cat([batch1[k], batch2[k]]) for k in batch1})
    a, b = split.compute(), whole.compute()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-6)
