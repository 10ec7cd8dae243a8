"""The embedded default: seeded, well-formed, and carrying structure that history and neighbours can use."""

from __future__ import annotations

import numpy as np
import pytest

from stlm.data.sources.synthetic import SyntheticTrafficSource


@pytest.fixture(scope="module")
def series():
    return SyntheticTrafficSource(n_nodes=60, n_days=21, seed=3).load()


def test_shapes_and_contract(series):
    assert series.values.shape == (21 * 288, 60, 1)
    assert series.adjacency.shape == (60, 60)
    assert series.freq.total_seconds() == 300
    observed = series.values[series.mask]
    assert 20 < observed.mean() < 80  # speeds in mph
    assert (series.values[~series.mask] == 0).all()
    assert 0.9 < series.mask.mean() < 0.995  # outages and dropped readings, not too many


def test_same_seed_same_data_other_seed_other_data(series):
    again = SyntheticTrafficSource(n_nodes=60, n_days=21, seed=3).load()
    other = SyntheticTrafficSource(n_nodes=60, n_days=21, seed=4).load()
    assert again.fingerprint() == series.fingerprint()
    assert other.fingerprint() != series.fingerprint()


def test_graph_is_connected_enough(series):
    adj = series.adjacency > 0
    np.fill_diagonal(adj, False)
    assert adj.sum(1).min() >= 1  # every sensor has a neighbour


def _forward_fill(v, m):
    out = v.copy()
    for t in range(1, len(v)):
        out[t] = np.where(m[t], v[t], out[t - 1])
    return out


def test_structure_last_value_wins_short_historical_average_wins_long(series):
    """Persistence is best a step ahead, the weekly profile an hour ahead: both history and calendar matter."""
    v, m = series.values[..., 0], series.mask[..., 0]
    ts = series.timestamps
    tow = np.asarray(ts.day_of_week * 288 + ts.hour * 12 + ts.minute // 5)
    split = 14 * 288
    profile = np.zeros((7 * 288, v.shape[1]))
    for k in range(7 * 288):
        rows = tow[:split] == k
        profile[k] = (v[:split][rows] * m[:split][rows]).sum(0) / np.maximum(m[:split][rows].sum(0), 1)
    ff = _forward_fill(v, m)
    t0 = np.arange(split, len(v) - 12)
    for h, lv_better in ((1, True), (12, False)):
        target, obs = v[t0 + h], m[t0 + h]
        lv = np.abs(ff[t0] - target)[obs].mean()
        ha = np.abs(profile[tow[t0 + h]] - target)[obs].mean()
        assert (lv < ha) == lv_better, (h, lv, ha)


def test_congestion_spills_to_upstream_neighbours(series):
    """A sensor's slowdown is followed by slowdowns of the sensors linked to it (not only by its own past)."""
    v = np.where(series.mask[..., 0], series.values[..., 0], np.nan)
    deficit = np.nanmax(v, axis=0) - v  # how far below its free flow each sensor is
    adj = series.adjacency.copy()
    np.fill_diagonal(adj, 0)
    lagged = []
    for lag in (0, 6):
        a, b = deficit[: len(v) - 6], deficit[lag : len(v) - 6 + lag]
        i, j = np.nonzero(adj)
        ok = ~np.isnan(a[:, i]) & ~np.isnan(b[:, j])
        x, y = a[:, i][ok], b[:, j][ok]
        lagged.append(np.corrcoef(x, y)[0, 1])
    # Linked sensors' congestion is clearly correlated, also half an hour later.
    assert lagged[0] > 0.3 and lagged[1] > 0.2, lagged


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_nodes"):
        SyntheticTrafficSource(n_nodes=1)
    with pytest.raises(ValueError, match="interval_minutes=7"):
        SyntheticTrafficSource(interval_minutes=7)
