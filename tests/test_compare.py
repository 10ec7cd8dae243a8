"""stlm.compare: the grouped table against mlflow.search_runs, the outputs, the selection arguments, errors."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from stlm.compare import compare
from stlm.compare.render import to_markdown, to_text
from stlm.compare.table import group_runs, varying_params
from tiny_runs import compare_cfg, train_tiny

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two models x two seeds in sweep ``s1``, and one run of a third model outside it, in one SQLite store."""
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for model in ("linear", "last_value"):
        for seed in (0, 1):
            train_tiny(root, uri, f"{model}{seed}", model, f"seed={seed}", "sweep_id=s1", "~baselines")
    train_tiny(root, uri, "ha", "historical_average", "sweep_id=s2", "~baselines")
    return root, uri


def test_table_numbers_match_mlflow_search_runs(store, tmp_path):
    root, uri = store
    result = compare(compare_cfg(tmp_path, uri, "experiment=traffic", "sweep=s1"))
    table = pd.read_csv(tmp_path / "comparison.csv")

    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["traffic"], filter_string="tags.sweep_id = 's1'")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 4 and set(table["model"]) == set(runs["tags.model"]) and len(table) == 2
    metric_cols = [c for c in runs.columns if c.startswith("metrics.test/")]
    assert len(metric_cols) >= 39  # mae, rmse, mape at 12 horizons and their averages
    for model, group in runs.groupby("tags.model"):
        row = table[table["model"] == model].iloc[0]
        assert row["seeds"] == 2 and set(row["run_ids"].split(";")) == set(group["run_id"])
        for col in metric_cols:
            key = col.removeprefix("metrics.")
            assert row[f"{key} mean"] == pytest.approx(group[col].mean(), rel=1e-9, abs=1e-12)
            assert row[f"{key} std"] == pytest.approx(group[col].std(ddof=1), rel=1e-9, abs=1e-12)
    # Outside a Hydra run (compose) the model tag is the class name.
    linear = table[table["model"] == "LinearForecaster"].iloc[0]
    assert linear["n_parameters"] > 0 and linear["train_s"] > 0 and linear["train_samples_per_s"] > 0
    assert math.isnan(table[table["model"] == "LastValue"].iloc[0]["train_samples_per_s"])  # never trained
    # Rows are ordered best first by rank_by; the comparison reports that run.
    assert list(table["test/mae_avg mean"]) == sorted(table["test/mae_avg mean"])
    assert result["comparison"].rows.iloc[0]["best_run_id"] in set(table.iloc[0]["run_ids"].split(";"))


def test_outputs_plots_and_comparison_run(store, tmp_path, capsys):
    root, uri = store
    result = compare(compare_cfg(tmp_path, uri, "experiment=traffic", "sweep=s1"))
    out = capsys.readouterr().out
    assert "±" in out and "MAE h12" in out and "4 runs, 2 configurations" in out
    best_mae12 = result["comparison"].rows.sort_values("test/mae_h12 mean").iloc[0]
    best_line = next(line for line in out.splitlines() if line.startswith(best_mae12["model"] + " "))
    assert f"*{best_mae12['test/mae_h12 mean']:.3f}" in best_line

    md = (tmp_path / "comparison.md").read_text()
    assert md.startswith("| model | seeds | params |") and "**" in md
    for name in ("horizon_mae.png", "horizon_rmse.png", "learning_curves.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name

    client = MlflowClient(uri)
    run = client.get_run(result["comparison_run_id"])
    assert run.data.tags["stlm.kind"] == "comparison" and "tags.sweep_id = 's1'" in run.data.tags["stlm.compare.filter"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "comparison")}
    assert {"comparison/comparison.csv", "comparison/comparison.md", "comparison/learning_curves.png"} <= logged
    # The comparison run is not itself compared the next time.
    again = compare(compare_cfg(tmp_path / "again", uri, "experiment=traffic", "log_to_mlflow=false"))
    assert len(again["frame"]) == 5


def test_selection_by_tag_filter_and_several_experiments(store, tmp_path):
    root, uri = store
    by_tag = compare(compare_cfg(tmp_path / "t", uri, "tag=model:LinearForecaster", "log_to_mlflow=false", "plots=false"))
    assert set(by_tag["frame"]["tags.model"]) == {"LinearForecaster"} and len(by_tag["frame"]) == 2
    by_filter = compare(compare_cfg(tmp_path / "f", uri, "experiment=[traffic]", "filter='tags.seed = \"1\"'",
                                    "log_to_mlflow=false", "plots=false"))
    assert set(by_filter["frame"]["tags.seed"]) == {"1"} and len(by_filter["frame"]) == 2
    everything = compare(compare_cfg(tmp_path / "a", uri, "log_to_mlflow=false", "plots=false"))  # all experiments
    assert len(everything["comparison"].rows) == 3


def test_unknown_experiment_and_empty_selection_are_explained(store, tmp_path):
    root, uri = store
    with pytest.raises(ValueError, match=r"experiment='trafic': no such experiment .* known experiments: \['Default', 'traffic'\]"):
        compare(compare_cfg(tmp_path, uri, "experiment=trafic"))
    with pytest.raises(ValueError, match="no finished training runs match"):
        compare(compare_cfg(tmp_path, uri, "sweep=nope"))
    with pytest.raises(ValueError, match="tag='model': expected KEY:VALUE"):
        compare(compare_cfg(tmp_path, uri, "tag=model"))
    with pytest.raises(FileNotFoundError, match="no MLflow store at that path"):
        compare(compare_cfg(tmp_path, f"sqlite:///{tmp_path / 'missing.db'}"))
    with pytest.raises(ValueError, match="rank_by='test/mae_h99': no run logged this metric"):
        compare(compare_cfg(tmp_path, uri, "rank_by=test/mae_h99"))


def _frame(rows):
    base = {"start_time": 0, "end_time": 1000, "metrics.test/mae_avg": 1.0, "metrics.test/mae_h3": 1.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_columns_are_the_parameters_that_differ_and_seeds_are_grouped():
    frame = _frame([
        {"run_id": "a", "tags.model": "stlm", "params.model.d_model": "16", "params.seed": "0", "metrics.test/mae_avg": 1.0},
        {"run_id": "b", "tags.model": "stlm", "params.model.d_model": "16", "params.seed": "1", "metrics.test/mae_avg": 3.0},
        {"run_id": "c", "tags.model": "stlm", "params.model.d_model": "32", "params.seed": "0", "metrics.test/mae_avg": 0.5},
        {"run_id": "d", "tags.model": "last_value", "params.seed": "0", "metrics.test/mae_avg": 2.5},
    ])
    frame["params.paths.output_dir"] = ["/o/a", "/o/b", "/o/c", "/o/d"]
    frame["params.callbacks.checkpoint.dirpath"] = frame["params.paths.output_dir"] + "/checkpoints"
    comp = group_runs(frame)
    assert comp.varying == ["model.d_model"]  # not the seed, not the paths, not the baseline's missing d_model
    assert list(comp.rows["label"]) == ["stlm d_model=32", "stlm d_model=16", "last_value"]
    stlm16 = comp.rows.iloc[1]
    assert stlm16["seeds"] == 2 and stlm16["test/mae_avg mean"] == 2.0
    assert stlm16["test/mae_avg std"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert stlm16["best_run_id"] == "a"
    assert comp.best("test/mae_avg") == {"stlm d_model=32"}
    md = to_markdown(comp, ["mae"], [3])
    assert "| stlm | 32 | 1 |" in md and "**0.500**" in md and "2.000 ± 1.414" in md
    assert "*0.500" in to_text(comp, ["mae"], [3])


def test_a_parameter_only_one_model_has_gets_no_column():
    frame = _frame([
        {"run_id": "a", "tags.model": "stlm", "params.model._target_": "x.STLM", "params.model.d_model": "16"},
        {"run_id": "b", "tags.model": "linear", "params.model._target_": "x.Linear", "params.model.seasonal_prior": "True"},
    ])
    assert varying_params(frame, ["params.model._target_", "params.model.d_model", "params.model.seasonal_prior"]) == []


def test_crps_is_shown_beside_mae_and_coverage_is_best_nearest_its_nominal_level():
    frame = _frame([
        {"run_id": "a", "tags.model": "stlm", "params.model._target_": "x.STLM", "params.model.quantiles": "default",
         "metrics.test/mae_avg": 1.05,
         "metrics.test/crps_avg": 0.79, "metrics.test/coverage90_avg": 0.88},
        {"run_id": "b", "tags.model": "stlm", "params.model._target_": "x.STLM", "params.model.quantiles": "None",
         "metrics.test/mae_avg": 1.04},
        {"run_id": "c", "tags.model": "last_value", "params.model._target_": "x.LastValue", "params.model.quantiles": "default",
         "metrics.test/mae_avg": 1.65,
         "metrics.test/crps_avg": 1.29, "metrics.test/coverage90_avg": 0.97},
    ])
    comp = group_runs(frame)
    assert comp.best("test/crps_avg") == {"stlm quantiles=default"}  # lowest
    assert comp.best("test/coverage90_avg") == {"stlm quantiles=default"}  # |0.88 - 0.9| < |0.97 - 0.9|, not lowest
    text = to_text(comp, ["mae", "crps"], [3])
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[-1] for line in text.splitlines()[2:5]}
    assert text.splitlines()[0].endswith("CRPS avg")
    assert rows == {"stlm default": "*0.790", "stlm None": "-", "last_value default": "1.290"}  # point runs: no CRPS
