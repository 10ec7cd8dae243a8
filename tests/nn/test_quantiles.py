"""Non-crossing quantiles: sorted for any raw output, the median passes through, and every output is trainable."""

import torch

from stlm.metrics.probabilistic import DEFAULT_LEVELS, check_levels, pinball
from stlm.nn.quantiles import median_index, non_crossing


def test_quantiles_never_cross_and_the_median_passes_through():
    levels = check_levels(DEFAULT_LEVELS)
    m = median_index(levels)
    assert abs(float(levels[m]) - 0.5) < 1e-9
    raw = torch.randn(64, 3, len(levels), generator=torch.Generator().manual_seed(0)) * 10
    q = non_crossing(raw, m)
    assert q.shape == raw.shape
    assert (q.diff(dim=-1) >= 0).all()  # very negative raw steps round to 0 in float32: equal, never crossed
    assert (non_crossing(raw / 10, m).diff(dim=-1) > 0).all()
    assert torch.equal(q[..., m], raw[..., m])


def test_uneven_levels_and_a_median_at_the_edge():
    raw = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    for levels in ([0.1, 0.5, 0.9], [0.5, 0.8, 0.99], [0.01, 0.2, 0.5]):
        q = non_crossing(raw, median_index(torch.tensor(levels)))
        assert (q.diff(dim=-1) > 0).all(), levels


def test_pinball_training_fits_the_quantiles_of_the_data():
    """A free raw vector trained on N(2, 0.5^2) samples lands on its quantiles (the head's loss can do its job)."""
    levels = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    raw = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    y = 2 + 0.5 * torch.randn(4000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    opt = torch.optim.Adam([raw], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        pinball(non_crossing(raw, 2).expand(len(y), 5), y, levels).mean().backward()
        opt.step()
    expected = torch.quantile(y, levels)
    assert torch.allclose(non_crossing(raw, 2).detach(), expected, atol=0.05)


def test_gaussian_step_bias_starts_the_band_as_a_normal_distribution():
    from stlm.nn.quantiles import gaussian_step_bias

    levels = check_levels(DEFAULT_LEVELS)
    m = median_index(levels)
    raw = gaussian_step_bias(levels, 0.5)
    raw[m] = 1.25  # any median
    q = non_crossing(raw.float(), m).double()
    expected = 1.25 + 0.5 * torch.distributions.Normal(0.0, 1.0).icdf(levels)
    torch.testing.assert_close(q, expected, rtol=0, atol=1e-5)
