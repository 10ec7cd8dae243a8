"""Windows, chronological splits, scaler fitted on training data only, calendar coverage, length errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stlm.data.calendar import calendar_index
from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.data.scalers import StandardScaler
from stlm.data.sources.base import DataValidationError, InMemorySource, SpatioTemporalSeries
from stlm.data.splits import ChronologicalSplit


class ArraySource(InMemorySource):
    """A source over arrays built by the test."""

    def __init__(self, values, mask=None, start="2024-01-01", freq="5min"):
        self.values = np.asarray(values, dtype=np.float32)
        self.mask = np.ones(self.values.shape, bool) if mask is None else mask
        self.start, self.freq = start, freq

    def load(self):
        T, N, C = self.values.shape
        return SpatioTemporalSeries(
            values=np.where(self.mask, self.values, 0).astype(np.float32), mask=self.mask,
            timestamps=pd.date_range(self.start, periods=T, freq=self.freq),
            node_ids=[f"n{i}" for i in range(N)], channels=[f"c{i}" for i in range(C)], name="arrays",
        )


def test_no_sample_crosses_a_split_boundary():
    split = ChronologicalSplit(0.7, 0.1, 0.2)
    T, W, H = 1000, 12, 6
    periods = split.periods(T)
    starts = split.sample_starts(T, W, H)
    for name, (a, b) in periods.items():
        s = starts[name]
        assert len(s) == (b - a) - (W + H) + 1
        assert s.min() >= a and (s + W + H).max() <= b
    assert periods["train"] == (0, 700) and periods["val"] == (700, 800) and periods["test"] == (800, 1000)


def test_split_fractions_are_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        ChronologicalSplit(0.8, 0.1, 0.2)


def test_scaler_uses_observed_values_only():
    values = np.array([[[1.0], [100.0]], [[3.0], [5.0]]], dtype=np.float32)  # [T=2, N=2, C=1]
    mask = np.array([[[True], [False]], [[True], [True]]])
    scaler = StandardScaler().fit(values, mask)
    observed = np.array([1.0, 3.0, 5.0])
    assert scaler.mean[0] == pytest.approx(observed.mean())
    assert scaler.std[0] == pytest.approx(observed.std())
    per_node = StandardScaler(per_node=True).fit(values, mask)
    assert per_node.mean[:, 0] == pytest.approx([2.0, 5.0])
    restored = StandardScaler.from_state_dict(scaler.state_dict())
    x = torch.tensor([[0.5]])
    assert torch.allclose(restored.inverse_transform(x), scaler.inverse_transform(x))


def test_scaler_is_fitted_on_the_training_period_only():
    T = 200
    values = np.zeros((T, 2, 1), np.float32)
    values[140:] = 1000.0  # validation and test periods are far off: they must not move the statistics
    values[:140, 0] = np.arange(140)[:, None] % 7
    dm = SpatioTemporalDataModule(ArraySource(values), window=4, horizon=2)
    dm.setup()
    train = values[:140]
    assert dm.scaler.mean[0] == pytest.approx(train.mean(), rel=1e-5)


def test_batches_follow_the_data_contract():
    T, N, C = 300, 3, 2
    rng = np.random.default_rng(0)
    values = rng.normal(50, 5, (T, N, C)).astype(np.float32)
    mask = rng.random((T, N, C)) > 0.1
    dm = SpatioTemporalDataModule(ArraySource(values, mask), window=5, horizon=3, batch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 5, N, C) and batch["y"].shape == (4, 3, N, C)
    assert batch["x_time"].shape == (4, 5, 4) and batch["x_time"].dtype == torch.long
    # Targets are in original units where observed, inputs are scaled and 0 where missing.
    s = int(batch["index"][0]) - 5
    expected_y = np.where(mask[s + 5 : s + 8], values[s + 5 : s + 8], 0)
    assert np.allclose(batch["y"][0].numpy(), expected_y)
    assert np.allclose(batch["mask"][0].numpy(), mask[s + 5 : s + 8])
    assert (batch["x"][batch["x_mask"] == 0] == 0).all()
    expected_x = (values[s : s + 5] - dm.scaler.mean) / dm.scaler.std
    assert np.allclose(batch["x"][0].numpy()[mask[s : s + 5]], expected_x[mask[s : s + 5]], atol=1e-5)
    assert dm.spec.n_nodes == N and dm.spec.n_channels == C and dm.spec.window == 5 and dm.spec.horizon == 3


def test_calendar_indices():
    ts = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 12:05", "2024-01-07 23:55"])  # Mon, Mon, Sun
    cal = calendar_index(ts, 288)
    assert cal[:, :2].tolist() == [[0, 0], [145, 0], [287, 6]]
    assert cal[:, 2:].tolist() == [[0, 0], [0, 0], [6, 0]]  # day of year - 1, month - 1


def test_short_training_period_turns_day_of_week_off_with_a_warning():
    T = 5 * 288  # five days: training (70 %) never sees the last weekdays of the test period
    dm = SpatioTemporalDataModule(ArraySource(np.ones((T, 2, 1))), window=12, horizon=12)
    with pytest.warns(UserWarning, match="day-of-week feature is turned off"):
        dm.setup()
    assert dm.spec.days_per_week == 0 and dm.spec.steps_per_day == 288


def test_window_plus_horizon_longer_than_a_split_is_explained():
    dm = SpatioTemporalDataModule(ArraySource(np.ones((100, 2, 1))), window=12, horizon=12)
    with pytest.raises(DataValidationError, match=r"window \(12\) \+ dataset.horizon \(12\) = 24 steps do not fit in the val period"):
        dm.setup()


def test_nodes_never_observed_in_training_are_reported_and_dropped_on_request():
    T = 300
    mask = np.ones((T, 3, 1), bool)
    mask[:210, 1] = False  # node n1 unseen during training
    with pytest.warns(UserWarning, match=r"1 of 3 nodes have no observation in the training period \(n1\)"):
        dm = SpatioTemporalDataModule(ArraySource(np.ones((T, 3, 1)), mask), window=4, horizon=2, unobserved_nodes="drop")
        dm.setup()
    assert dm.spec.node_ids == ("n0", "n2")
    with pytest.raises(ValueError, match="unobserved_nodes='zero'"):
        SpatioTemporalDataModule(ArraySource(np.ones((T, 3, 1))), unobserved_nodes="zero")


def test_bad_window_argument_is_named():
    with pytest.raises(ValueError, match="dataset.window must be a positive integer"):
        SpatioTemporalDataModule(ArraySource(np.ones((100, 2, 1))), window=0)
