"""Load: four trainings started at the same moment on one fresh SQLite MLflow store (the default kind) all
finish, and all four runs are recorded with their metrics. Nobody initialised the store beforehand: the first
process creates it under a file lock while the others wait (stlm/tracking/store.py)."""

from __future__ import annotations

import subprocess

from mlflow.tracking import MlflowClient

from reliability_helpers import env, tiny, train_cmd
from stlm.train.runs import RunRecord

N_JOBS = 4


def test_four_trainings_at_once_on_one_fresh_store_all_finish_and_are_recorded(tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    assert not (tmp_path / "shared").exists()
    procs = [subprocess.Popen(train_cmd(*tiny(tmp_path, f"job{i}", f"seed={i}")), cwd=tmp_path, env=env(uri),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(N_JOBS)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"job {i}:\n{errors[i][-3000:]}"

    records = [RunRecord.load(tmp_path / "outputs" / f"job{i}" / "run.json") for i in range(N_JOBS)]
    client = MlflowClient(uri)
    runs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("traffic").experiment_id])}
    assert sorted(runs) == sorted(r.mlflow_run_id for r in records)  # four runs, one per job, no strays
    for record in records:
        logged = runs[record.mlflow_run_id]
        assert record.status == "finished" and logged.info.status == "FINISHED"
        assert logged.data.metrics["test/mae_avg"] == record.test_metrics["mae_avg"]
        assert logged.data.tags["seed"] == str(records.index(record))
