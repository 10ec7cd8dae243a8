"""SIGTERM (preemption) during training: last.ckpt written where it stopped, MLflow run KILLED, exit code 143,
and the same command with ``ckpt_path=last`` finishes the run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

import torch
from mlflow.tracking import MlflowClient

from reliability_helpers import env, fault_cmd, tiny, wait_for
from stlm.train.preemption import Preempted, sigterm_outside_lightning
from stlm.train.runs import RunRecord
from stlm.train import run
from tiny_runs import compose


def test_sigterm_checkpoints_marks_the_run_killed_exits_143_and_resumes(tmp_path, tracking_uri):
    overrides = tiny(tmp_path, "run", "trainer.max_epochs=3")  # 4 optimizer steps per epoch
    marker = tmp_path / "at_step_6"
    proc = subprocess.Popen(fault_cmd(6, marker, *overrides), cwd=tmp_path, env=env(tracking_uri),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 143, err[-3000:]
    assert "preempted (SIGTERM): saved" in err and "ckpt_path=last" in err
    run_dir = tmp_path / "outputs" / "run"
    record = RunRecord.load(run_dir / "run.json")
    assert record.status == "preempted"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6  # mid-epoch 2, not epoch 1's step 4
    client = MlflowClient(tracking_uri)
    assert client.get_run(record.mlflow_run_id).info.status == "KILLED"
    params = client.get_run(record.mlflow_run_id).data.params

    resumed = run(compose("train", [*overrides, "ckpt_path=last"]))
    assert resumed["run_id"] == record.mlflow_run_id
    assert torch.load(last, weights_only=True)["global_step"] == 12
    finished = client.get_run(record.mlflow_run_id)
    assert finished.info.status == "FINISHED" and finished.data.params == params
    assert len(client.search_runs([finished.info.experiment_id])) == 1
    assert RunRecord.load(run_dir / "run.json").status == "finished"


def test_sigterm_outside_the_training_loops_stops_at_once_with_143():
    """Reading data, testing, logging: no batch boundary to wait for, so the SIGTERM ends the run right away."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted) as info:
        with sigterm_outside_lightning():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # interrupted by the handler
    assert info.value.code == 143 and "outside training" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
