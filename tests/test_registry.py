"""The model registry on a local SQLite store: register=NAME, promote=ALIAS, a checkpoint back from models:/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from stlm.compare import compare
from stlm.tracking.registry import resolve_checkpoint_from_uri
from tiny_runs import compare_cfg, train_compare_promote


@pytest.fixture(scope="module")
def path_on_sqlite(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return root, uri, train_compare_promote(root, uri)


def check_whole_path(root: Path, uri: str, out: dict, name: str = "tiny_linear") -> None:
    """Assertions shared with the server-backed test."""
    client = MlflowClient(uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # the fitted baseline registered nothing
    best = out["compare"]["comparison"].rows.iloc[0]
    trained = {r["run_id"]: r for r in out["trained"]}
    best_run = min(trained.values(), key=lambda r: r["test"]["mae_avg"])
    assert best["best_run_id"] == best_run["run_id"]

    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == best_run["run_id"] and out["compare"]["promoted"].version == champion.version
    assert out["champion"].is_file()
    assert out["champion"].read_bytes() == Path(best_run["best_checkpoint"]).read_bytes()
    ckpt = torch.load(out["champion"], map_location="cpu", weights_only=False)
    assert ckpt["stlm"]["config"]["seed"] == int(client.get_run(best_run["run_id"]).data.tags["seed"])
    assert "spec" in ckpt["stlm"] and "scaler" in ckpt["stlm"]  # what a forecast job rebuilds the model from

    logged = {a.path for a in client.list_artifacts(out["compare"]["comparison_run_id"], "comparison")}
    assert "comparison/comparison.csv" in logged and "comparison/horizon_mae.png" in logged


def test_register_promote_and_load_the_champion_on_sqlite(path_on_sqlite):
    check_whole_path(*path_on_sqlite)


def test_other_uri_forms_resolve_to_the_same_kind_of_file(path_on_sqlite, tmp_path):
    root, uri, out = path_on_sqlite
    run_id = out["trained"][0]["run_id"]
    by_version = resolve_checkpoint_from_uri("models:/tiny_linear/1", tracking_uri=uri, dst_dir=tmp_path / "v")
    by_run = resolve_checkpoint_from_uri(run_id, tracking_uri=uri, dst_dir=tmp_path / "r")
    by_runs_uri = resolve_checkpoint_from_uri(f"runs:/{run_id}", tracking_uri=uri, dst_dir=tmp_path / "u")
    latest = resolve_checkpoint_from_uri("models:/tiny_linear/latest", tracking_uri=uri, dst_dir=tmp_path / "l")
    assert by_version.read_bytes() == by_run.read_bytes() == by_runs_uri.read_bytes()
    assert by_version.name == "best.ckpt" and latest.is_file()


def test_bad_uris_and_a_baseline_promotion_are_explained(path_on_sqlite, tmp_path):
    root, uri, out = path_on_sqlite
    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID"):
        resolve_checkpoint_from_uri("champion", tracking_uri=uri)
    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS or models:/NAME/VERSION"):
        resolve_checkpoint_from_uri("models:/tiny_linear", tracking_uri=uri)
    with pytest.raises(ValueError, match="has no registered model version.*fitted baseline has none"):
        compare(compare_cfg(tmp_path / "a", uri, "tag=model:LastValue", "promote=champion", "log_to_mlflow=false", "plots=false"))
    with pytest.raises(ValueError, match="logged no checkpoint under 'checkpoints/'"):
        compare(compare_cfg(tmp_path / "b", uri, "tag=model:LastValue", "promote=champion", "register=tiny_linear",
                            "log_to_mlflow=false", "plots=false"))
