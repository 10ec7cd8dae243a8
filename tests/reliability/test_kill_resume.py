"""``kill -9`` during training, then the same command with ``ckpt_path=last``: the run resumes from the last
epoch's checkpoint, in the same MLflow run (params not logged again), and ends with exactly the metrics of a run
that was never interrupted (same seed, CPU; RNG states travel in the checkpoint: stlm/train/rng_state.py)."""

from __future__ import annotations

import subprocess

import pytest
import torch
from mlflow.tracking import MlflowClient

from reliability_helpers import env, fault_cmd, tiny, wait_for
from stlm.train.runs import RunRecord
from stlm.train import run
from tiny_runs import compose


@pytest.fixture
def one_thread():
    """The killed subprocess runs with one torch thread; so do the in-process runs it is compared with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_kill_9_then_ckpt_path_last_matches_an_uninterrupted_run(tmp_path, tracking_uri, one_thread):
    overrides = tiny(tmp_path, "killed", "trainer.max_epochs=3", "seed=7")  # 4 optimizer steps per epoch
    marker = tmp_path / "at_step_6"
    proc = subprocess.Popen(fault_cmd(6, marker, *overrides), cwd=tmp_path, env=env(tracking_uri),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(marker, proc)
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed
    proc.communicate(timeout=60)
    assert proc.returncode == -9

    run_dir = tmp_path / "outputs" / "killed"
    record = RunRecord.load(run_dir / "run.json")
    assert record.status == "running"  # nothing could record the kill
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    client = MlflowClient(tracking_uri)
    assert client.get_run(record.mlflow_run_id).info.status == "RUNNING"
    params = client.get_run(record.mlflow_run_id).data.params

    resumed = run(compose("train", [*overrides, "ckpt_path=last"]))
    reference = run(compose("train", [*tiny(tmp_path, "reference", "trainer.max_epochs=3", "seed=7"), "logger=none"]))

    assert resumed["run_id"] == record.mlflow_run_id
    assert resumed["test"] == reference["test"]  # exactly, every metric at every horizon
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    finished = client.get_run(record.mlflow_run_id)
    assert finished.info.status == "FINISHED" and finished.data.params == params
    assert [r.info.run_id for r in client.search_runs([finished.info.experiment_id])] == [record.mlflow_run_id]
