"""End to end on CPU: short trainings through the real entry point, MLflow read back, real data, clear errors."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from stlm.data.sources import DataValidationError, load_adjacency
from stlm.data.sources.synthetic import SyntheticTrafficSource
from stlm.train.runs import RunRecord
from stlm.train import run


def _train(compose_train, overrides):
    return run(compose_train(overrides))


def _without(overrides, *prefixes):
    return [o for o in overrides if not o.startswith(prefixes)]


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def test_default_training_logs_everything_to_mlflow(compose_train, tiny_train_overrides, tracking_uri):
    result = _train(compose_train, tiny_train_overrides)
    assert math.isfinite(result["test"]["mae_avg"])
    assert set(result["baselines"]) == {"last_value", "historical_average"}

    runs = mlflow.search_runs(experiment_names=["traffic"], filter_string=f"attributes.run_id = '{result['run_id']}'")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["params.model.d_model"] == "16" and row["params.dataset.name"] == "traffic"
    assert row["tags.seed"] == "0" and len(row["tags.data_fingerprint"]) == 16 and row["tags.git_sha"]
    for split in ("val", "test"):
        for h in (1, 3, 6, 12):
            assert math.isfinite(row[f"metrics.{split}/mae_h{h}"])
        assert math.isfinite(row[f"metrics.{split}/rmse_avg"])
    assert row["metrics.test/mae_avg"] == pytest.approx(result["test"]["mae_avg"], rel=1e-6)
    assert math.isfinite(row["metrics.baselines/last_value/mae_avg"])

    client = mlflow.MlflowClient()
    artifacts = {a.path for folder in ("config", "checkpoints") for a in client.list_artifacts(result["run_id"], folder)}
    assert "config/resolved_config.yaml" in artifacts and "checkpoints/best.ckpt" in artifacts


def test_fitted_baseline_runs_without_training(compose_train, tiny_train_overrides, tracking_uri):
    result = _train(compose_train, _without(tiny_train_overrides, "model.") + ["model=historical_average"])
    assert result["best_checkpoint"] is None and result["n_parameters"] == 0
    # The same model as the reference row gives the same test metrics.
    assert result["test"]["mae_avg"] == pytest.approx(result["baselines"]["historical_average"]["mae_avg"], rel=1e-6)


def test_resume_last_never_resumes_a_different_configuration(compose_train, tiny_train_overrides, tracking_uri):
    _train(compose_train, tiny_train_overrides)
    with pytest.raises(FileNotFoundError, match="no earlier run of this configuration"):
        _train(compose_train, tiny_train_overrides + ["ckpt_path=last", "model.d_model=8"])


def test_resume_last_finds_the_run_of_this_configuration(compose_train, tiny_train_overrides, tracking_uri, tmp_path):
    overrides = _without(tiny_train_overrides, "paths.output_dir")
    first = _train(compose_train, overrides + [f"paths.output_dir={tmp_path / 'outputs' / 'a'}"])
    again = _train(compose_train, overrides + [f"paths.output_dir={tmp_path / 'outputs' / 'b'}", "ckpt_path=last"])
    assert again["run_dir"] == first["run_dir"]
    assert again["run_id"] == first["run_id"]
    client = mlflow.MlflowClient()
    assert len(client.search_runs([client.get_experiment_by_name("traffic").experiment_id])) == 1


class Interrupt(RuntimeError):
    pass


class InterruptAtStep:
    """A Lightning callback that kills the run at a given optimizer step (a stand-in for a crash)."""

    def __new__(cls, step):
        import pytorch_lightning as pl

        class _Callback(pl.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == step:
                    raise Interrupt(f"interrupted at step {step}")

        return _Callback()


def test_interrupted_run_resumes_where_it_stopped(compose_train, tiny_train_overrides, tracking_uri):
    """Killed in its second epoch, the run resumes from the first epoch's last.ckpt, in the same MLflow run,
    finishes all epochs, and its parameters are not logged again."""
    import torch

    overrides = tiny_train_overrides + ["trainer.max_epochs=3"]  # 4 steps per epoch
    with pytest.raises(Interrupt):
        run(compose_train(overrides), extra_callbacks=[InterruptAtStep(6)])
    record = RunRecord.load(f"{tiny_train_overrides[-1].split('=', 1)[1]}/run.json")
    assert record.status == "failed"
    assert torch.load(f"{record.checkpoint_dir}/last.ckpt", weights_only=False)["global_step"] == 4
    client = mlflow.MlflowClient()
    params_before = client.get_run(record.mlflow_run_id).data.params

    resumed = _train(compose_train, overrides + ["ckpt_path=last"])
    assert resumed["run_id"] == record.mlflow_run_id
    assert torch.load(f"{record.checkpoint_dir}/last.ckpt", weights_only=False)["global_step"] == 12
    assert client.get_run(record.mlflow_run_id).data.params == params_before
    assert RunRecord.load(f"{resumed['run_dir']}/run.json").status == "finished"


def test_checkpoint_of_another_configuration_is_refused(compose_train, tiny_train_overrides, tracking_uri):
    first = _train(compose_train, tiny_train_overrides)
    with pytest.raises(ValueError, match="differs from this one"):
        _train(compose_train, tiny_train_overrides + [f"ckpt_path={first['best_checkpoint']}", "model.d_model=8"])


def test_resume_last_without_an_earlier_run_is_explained(compose_train, tiny_train_overrides, tracking_uri):
    with pytest.raises(FileNotFoundError, match="ckpt_path=last: no earlier run of this configuration"):
        _train(compose_train, tiny_train_overrides + ["ckpt_path=last"])


# ----------------------------------------------------------------------------------------------- real data


def test_hangzhou_metro_npz_trains(compose_train, tiny_train_overrides, tracking_uri, shared_data):
    hz = shared_data / "traffic" / "hangzhou_metro"
    overrides = _without(tiny_train_overrides, "dataset.n_") + [
        "dataset=hangzhou_metro", f"dataset.path={hz / 'hangzhou_metro.npz'}", f"dataset.adjacency={hz / 'graph.csv'}",
    ]
    result = _train(compose_train, overrides)
    assert math.isfinite(result["test"]["mae_avg"])
    row = mlflow.search_runs(experiment_names=["hangzhou_metro"]).iloc[0]
    assert math.isfinite(row["metrics.test/mae_h12"])


@pytest.fixture
def metr_la_h5(tmp_path, shared_data):
    """A METR-LA-layout .h5 (sensor ids of the real graph as columns, shuffled; zeros = missing; 9 days)."""
    graph = load_adjacency(shared_data / "traffic" / "metr_la_graph" / "adj_mx.pkl")
    synthetic = SyntheticTrafficSource(n_nodes=graph.n_nodes, n_days=9, seed=1).load()
    order = np.random.default_rng(0).permutation(graph.n_nodes)
    frame = pd.DataFrame(
        synthetic.values[:, order, 0], index=synthetic.timestamps.as_unit("ns"),
        columns=[graph.node_ids[i] for i in order],
    )
    path = tmp_path / "metr-la.h5"
    frame.to_hdf(path, key="df")
    return path


def test_metr_la_h5_with_the_real_graph_trains(compose_train, tiny_train_overrides, tracking_uri, shared_data, metr_la_h5):
    adj = shared_data / "traffic" / "metr_la_graph" / "adj_mx.pkl"
    overrides = _without(tiny_train_overrides, "dataset.n_")
    result = _train(compose_train, overrides + ["dataset=metr_la", f"dataset.path={metr_la_h5}", f"dataset.adjacency={adj}"])
    assert math.isfinite(result["test"]["mae_avg"])


def test_wide_csv_with_missing_cells_trains_with_finite_loss(compose_train, tiny_train_overrides, tracking_uri, tmp_path):
    series = SyntheticTrafficSource(n_nodes=10, n_days=9, seed=2).load()
    values = series.values[..., 0].astype(float)
    rng = np.random.default_rng(0)
    values[rng.random(values.shape) < 0.3] = np.nan  # 30 % empty cells
    values[~series.mask[..., 0]] = np.nan
    path = tmp_path / "speeds.csv"
    pd.DataFrame(values, index=pd.Index(series.timestamps, name="timestamp"), columns=series.node_ids).to_csv(path)
    overrides = _without(tiny_train_overrides, "dataset.n_")
    result = _train(compose_train, overrides + ["dataset=csv", f"dataset.path={path}"])
    assert math.isfinite(result["test"]["mae_avg"]) and math.isfinite(result["test"]["rmse_h12"])
    client = mlflow.MlflowClient()
    losses = [m.value for m in client.get_metric_history(result["run_id"], "train/loss_step")]
    assert losses and all(math.isfinite(v) for v in losses)


# ----------------------------------------------------------------------------------------------- clear errors


def test_missing_file_is_named(compose_train, tiny_train_overrides, tracking_uri, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        _train(compose_train, _without(tiny_train_overrides, "dataset.n_") + ["dataset=metr_la", f"dataset.path={tmp_path / 'nope.h5'}"])
    message = str(info.value)
    assert "nope.h5: file not found" in message and "dataset.path" in message


def test_wrong_format_is_named(compose_train, tiny_train_overrides, tracking_uri, tmp_path):
    path = tmp_path / "speeds.h5"
    path.write_text("timestamp,a,b\n2024-01-01,1,2\n")
    with pytest.raises(Exception) as info:
        _train(compose_train, _without(tiny_train_overrides, "dataset.n_") + ["dataset=metr_la", f"dataset.path={path}"])
    message = str(_root_cause(info.value))
    assert "speeds.h5" in message and "not an HDF5 file" in message


def test_series_graph_id_mismatch_is_named(compose_train, tiny_train_overrides, tracking_uri, shared_data, tmp_path):
    frame = pd.DataFrame(np.ones((9 * 288, 2)), index=pd.date_range("2024-01-01", periods=9 * 288, freq="5min"), columns=["773869", "999"])
    path = tmp_path / "two.h5"
    frame.to_hdf(path, key="df")
    adj = shared_data / "traffic" / "metr_la_graph" / "adj_mx.pkl"
    with pytest.raises(Exception) as info:
        _train(compose_train, _without(tiny_train_overrides, "dataset.n_") + ["dataset=metr_la", f"dataset.path={path}", f"dataset.adjacency={adj}"])
    err = _root_cause(info.value)
    assert isinstance(err, DataValidationError)
    assert "only in the series (1): '999'" in str(err) and "drop_unmatched" in str(err)


def test_window_longer_than_the_series_is_explained(compose_train, tiny_train_overrides, tracking_uri):
    with pytest.raises(DataValidationError, match=r"dataset.window \(2000\) \+ dataset.horizon \(12\)"):
        _train(compose_train, tiny_train_overrides + ["dataset.window=2000"])


def test_ddp_on_cpu_trains_and_logs_one_run(tmp_path, tiny_train_overrides):
    """trainer=ddp with 2 CPU processes (gloo): one MLflow run, one run record written by rank 0."""
    uri = f"sqlite:///{tmp_path / 'ddp.db'}"
    cmd = [sys.executable, "-m", "stlm.train", "trainer=ddp", "trainer.devices=2", *tiny_train_overrides]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = RunRecord.load(f"{tiny_train_overrides[-1].split('=', 1)[1]}/run.json")
    assert record.status == "finished" and record.mlflow_run_id
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("traffic").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == record.mlflow_run_id
    assert runs[0].data.metrics["test/mae_avg"] == pytest.approx(record.test_metrics["mae_avg"], rel=1e-6)
    # Every rank computed the same test metrics (synced over ranks; stlm.train logs them per rank).
    per_rank = dict(re.findall(r"rank (\d) of 2 test metrics: (\{.*\})", proc.stdout + proc.stderr))
    assert sorted(per_rank) == ["0", "1"] and json.loads(per_rank["0"]) == json.loads(per_rank["1"]) == record.test_metrics
