"""Sweeps: one sweep id per multirun, the store initialised before the jobs, finished configurations skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from stlm.tracking.sweeps import SweepCallback, find_finished_run, should_skip, sweep_id_for
from stlm.tracking.store import COMPLETE_TAG, ensure_experiment
from tiny_runs import CONF_DIR, TINY_ANY_MODEL, multirun_train


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("traffic").experiment_id])


def _run_dirs(sweep_dir: Path) -> set[Path]:
    return {p.parent for p in sweep_dir.rglob("run.json")}


def test_rerun_of_a_finished_sweep_trains_nothing_and_after_a_deletion_only_that_run(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["model=linear,last_value", "seed=0,1", *TINY_ANY_MODEL, "~baselines", f"logger.tracking_uri={uri}",
            f"paths.outputs_root={tmp_path / 'outputs'}"]

    multirun_train(base + [f"hydra.sweep.dir={tmp_path / 'sweep1'}"], monkeypatch)
    first = _runs(uri)
    assert len(first) == 4 and all(r.info.status == "FINISHED" for r in first)
    assert len({r.data.tags["sweep_id"] for r in first}) == 1 and first[0].data.tags["sweep_id"].startswith("sweep-")
    assert len({r.data.tags["config_hash"] for r in first}) == 4
    assert all(r.data.tags[COMPLETE_TAG] == "true" for r in first)
    assert len(_run_dirs(tmp_path / "sweep1")) == 4
    capsys.readouterr()

    multirun_train(base + [f"hydra.sweep.dir={tmp_path / 'sweep2'}"], monkeypatch)
    assert capsys.readouterr().out.count("skipped: configuration") == 4
    assert {r.info.run_id for r in _runs(uri)} == {r.info.run_id for r in first}  # no new run
    assert _run_dirs(tmp_path / "sweep2") == set()  # nothing built, nothing written

    deleted = next(r for r in first if r.data.tags["model"] == "linear" and r.data.tags["seed"] == "1")
    MlflowClient(uri).delete_run(deleted.info.run_id)
    multirun_train(base + [f"hydra.sweep.dir={tmp_path / 'sweep3'}"], monkeypatch)
    assert capsys.readouterr().out.count("skipped: configuration") == 3
    new = {r.info.run_id: r for r in _runs(uri)}.keys() - {r.info.run_id for r in first}
    (new_id,) = new
    retrained = MlflowClient(uri).get_run(new_id)
    assert retrained.data.tags["config_hash"] == deleted.data.tags["config_hash"]
    assert retrained.data.tags["sweep_id"] == deleted.data.tags["sweep_id"]  # the same command, the same sweep
    assert len(_run_dirs(tmp_path / "sweep3")) == 1


def test_unfinished_or_incomplete_runs_are_not_skipped(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = ensure_experiment(uri, "traffic")
    crashed = client.create_run(exp, tags={"config_hash": "abc"})  # still RUNNING: killed mid-training
    assert find_finished_run(uri, "traffic", "abc") is None
    client.set_terminated(crashed.info.run_id, "FINISHED")  # finished but died before logging everything
    assert find_finished_run(uri, "traffic", "abc") is None
    client.set_tag(crashed.info.run_id, COMPLETE_TAG, "true")
    assert find_finished_run(uri, "traffic", "abc").info.run_id == crashed.info.run_id
    assert find_finished_run(uri, "other_experiment", "abc") is None


def test_sweep_id_depends_on_the_sweep_not_on_order_or_paths():
    a = sweep_id_for(["model=stlm,linear", "seed=0,1,2"])
    assert a == sweep_id_for(["seed=0,1,2", "model=stlm,linear", "paths.outputs_root=/x", "hydra.sweep.dir=/y"])
    assert a == sweep_id_for(["seed=0,1,2", "model=stlm,linear", "register=m", "skip_finished=true"])
    assert a != sweep_id_for(["model=stlm,linear", "seed=0,1"])


def test_skip_finished_choices(compose_train):
    cfg = compose_train([])
    assert should_skip(cfg, in_multirun=True) and not should_skip(cfg, in_multirun=False)
    assert not should_skip(compose_train(["ckpt_path=last"]), in_multirun=True)  # resuming is not skipping
    assert should_skip(compose_train(["skip_finished=true"]), in_multirun=False)
    assert not should_skip(compose_train(["skip_finished=false"]), in_multirun=True)
    with pytest.raises(ValueError, match="skip_finished='sometimes': expected auto, true or false"):
        should_skip(compose_train(["skip_finished=sometimes"]), in_multirun=True)


def test_the_callback_initialises_the_store_and_fixes_the_sweep_id(tmp_path, monkeypatch):
    monkeypatch.delenv("STLM_SWEEP_ID", raising=False)
    db = tmp_path / "fresh" / "mlflow.db"
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"logger.tracking_uri=sqlite:///{db}"], return_hydra_config=True)
    cfg.hydra.overrides.task = ["seed=0,1"]  # what Hydra passes for `python -m stlm.train -m seed=0,1`
    callback = SweepCallback()
    callback.on_multirun_start(cfg)
    import os

    assert db.is_file() and os.environ["STLM_SWEEP_ID"] == sweep_id_for(["seed=0,1"])
    MlflowClient(f"sqlite:///{db}").search_experiments()  # tables exist: the jobs only read them
    callback.on_multirun_end(cfg)
    assert "STLM_SWEEP_ID" not in os.environ


def test_experiment_creation_is_idempotent_and_a_deleted_one_is_explained(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = ensure_experiment(uri, "traffic")
    assert ensure_experiment(uri, "traffic") == first
    MlflowClient(uri).delete_experiment(first)
    with pytest.raises(ValueError, match="experiment='traffic' is deleted"):
        ensure_experiment(uri, "traffic")
