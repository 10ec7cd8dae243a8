"""Long windows: fine-tuning from a short-window checkpoint, scoring every k-th forecast time, and inputs that
reach back across split boundaries (targets never do)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from stlm.engines.checkpoints import CheckpointError
from stlm.data.spec import DataSpec
from stlm.data.splits import ChronologicalSplit
from stlm.models.forecaster import STLMForecaster
from stlm.nn.spatial import GlobalAttention
from stlm.nn.temporal import SelectiveSSM


def make(window, head_steps=None, init_weights=None, seed=0):
    torch.manual_seed(seed)
    spec = DataSpec(n_nodes=4, n_channels=1, window=window, horizon=3, steps_per_day=288, days_per_week=7, interval_minutes=5)
    return STLMForecaster(spec, d_model=8, temporal=functools.partial(SelectiveSSM, d_state=4),
                          spatial=functools.partial(GlobalAttention, n_heads=2), seasonal_prior=True,
                          head_steps=head_steps, init_weights=init_weights)


def save_checkpoint(model, path):
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_a_long_window_model_starts_from_a_short_window_checkpoint(tmp_path):
    short = make(window=12, seed=1)
    short.prior.average.profile.normal_()
    ckpt = save_checkpoint(short, tmp_path / "short.ckpt")
    long = make(window=300, head_steps=12, init_weights=str(ckpt), seed=2)
    from stlm.engines.checkpoints import load_weights_into

    copied = load_weights_into(long, ckpt, skip_prefixes=("prior.",))
    assert "head.proj.weight" in copied and not any(k.startswith("prior.") for k in copied)
    for name, value in long.state_dict().items():
        if name.startswith("prior."):
            assert not torch.equal(value, short.state_dict()[name])  # fitted on this run's data, not copied
        else:
            torch.testing.assert_close(value, short.state_dict()[name])


def test_a_checkpoint_of_another_shape_is_refused_by_name(tmp_path):
    ckpt = save_checkpoint(make(window=12), tmp_path / "short.ckpt")
    with pytest.raises(CheckpointError, match="head.proj.weight"):
        from stlm.engines.checkpoints import load_weights_into

        load_weights_into(make(window=300), ckpt)  # flatten head over 300 steps: another shape


def test_eval_stride_scores_every_kth_forecast_time_and_history_may_cross_splits():
    split = ChronologicalSplit(0.7, 0.1, 0.2)
    n, window, horizon = 1000, 50, 12
    periods = split.periods(n)
    plain = split.sample_starts(n, window, horizon)
    across = split.sample_starts(n, window, horizon, history_across_splits=True, eval_stride=5)
    for name in ("val", "test"):
        a, b = periods[name]
        first_targets = across[name] + window
        assert first_targets[0] == a  # the first forecast time of the split is scored
        assert (first_targets + horizon <= b).all() and (first_targets >= a).all()  # targets never cross
        assert np.all(np.diff(across[name]) == 5)
        assert plain[name][0] == a  # without the option, inputs stay inside the split too
    np.testing.assert_array_equal(across["train"], plain["train"])


def test_a_window_longer_than_the_validation_period_trains_end_to_end(compose_train, tiny_train_overrides):
    """The tiny default's validation period has 259 steps: a 400-step window needs history across splits."""
    from stlm.train import run

    overrides = tiny_train_overrides + ["logger=none", "dataset.window=400", "model.head_steps=12",
                                        "dataset.stride=24", "dataset.eval_stride=24"]
    with pytest.raises(Exception, match="history_across_splits=true"):
        run(compose_train(overrides))
    result = run(compose_train(overrides + ["dataset.history_across_splits=true"]))
    assert np.isfinite(result["test"]["mae_avg"])
