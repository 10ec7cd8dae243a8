"""A non-finite loss stops training: non-zero exit, a message naming the step, no checkpoint with NaN weights.
(Engine-level twins: tests/engines/test_forecasting.py::test_non_finite_*.)"""

from __future__ import annotations

import subprocess

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from reliability_helpers import env, tiny, train_cmd
from stlm.engines.forecasting import NonFiniteLossError
from stlm.train.runs import RunRecord
from stlm.train import run
from tiny_runs import compose


class DivergeAtStep(pl.Callback):
    """Sets a huge learning rate for one optimizer step (a stand-in for a run that blows up mid-training)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e30


def _all_finite(path) -> bool:
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_divergence_mid_run_stops_with_the_step_and_leaves_only_finite_checkpoints(tmp_path, tracking_uri):
    overrides = tiny(tmp_path, "run", "trainer.max_epochs=3")  # 4 optimizer steps per epoch
    with pytest.raises(NonFiniteLossError, match=r"non-finite (training loss|gradient).* at epoch 1, global step [56]"):
        run(compose("train", overrides), extra_callbacks=[DivergeAtStep(5)])
    checkpoints = sorted((tmp_path / "outputs" / "run" / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["best.ckpt", "last.ckpt"]  # epoch 1's, nothing saved on the error
    for path in checkpoints:
        assert _all_finite(path) and torch.load(path, weights_only=True)["global_step"] == 4
    record = RunRecord.load(tmp_path / "outputs" / "run" / "run.json")
    assert record.status == "failed"
    assert MlflowClient(tracking_uri).get_run(record.mlflow_run_id).info.status == "FAILED"


def test_non_finite_loss_exits_non_zero_naming_the_step(tmp_path):
    proc = subprocess.run(train_cmd(*tiny(tmp_path, "run", "engine.optimizer.lr=1e30", "logger=none")),
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "NonFiniteLossError: non-finite" in proc.stderr and "global step" in proc.stderr, proc.stderr[-3000:]
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))  # diverged in epoch 0: no checkpoint at all
