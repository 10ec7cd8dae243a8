"""One row per model configuration: runs that differ only by seed are grouped as mean ± std over the seeds.

A configuration is the run's logged parameters minus those that never change a result (seed, paths, resume and
sweep flags, anything derived from the run's output directory). The columns shown are the parameters that
differ between configurations, the parameter count, training time and throughput (``perf/*`` metrics of
``stlm.train``) and the test metrics, each as ``mean ± std`` over the seeds (std with ddof=1; one seed: none).
Every test metric is an error (lower is better: MAE, RMSE, CRPS, width) and the lowest mean of each column is marked
best, except interval coverage (``coverage90_*``), where the best is the mean nearest the nominal level (0.90).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NOT_CONFIG = {"seed", "ckpt_path", "run_name", "sweep_id", "skip_finished", "register", "model.n_parameters", "experiment"}
NOT_CONFIG_PREFIXES = ("paths.", "hydra.")
MISSING = "-"
PERF = {"train_s": "metrics.perf/fit_s", "train_samples_per_s": "metrics.perf/train_samples_per_s",
        "test_samples_per_s": "metrics.perf/test_samples_per_s"}


@dataclass
class Comparison:
    """The grouped table (``rows``, ordered best first by ``rank_by``) and what its columns mean."""

    rows: pd.DataFrame
    varying: list[str]                 # parameter names that differ between configurations
    metrics: list[str]                 # test metric keys, e.g. "test/mae_h3"
    rank_by: str
    horizon: int | None = None         # forecast horizon H of the runs (from dataset.horizon), when one
    groups: dict[str, list[str]] = field(default_factory=dict)  # label -> run ids

    def best(self, key: str) -> set[str]:
        """Labels of the rows with the lowest mean of metric ``key``."""
        means = self.rows[f"{key} mean"]
        if means.isna().all():
            return set()
        nominal = re.search(r"coverage(\d+)_", key)
        if nominal:  # calibration: nearest the nominal level is best, not lowest
            means = (means - int(nominal[1]) / 100).abs()
        return set(self.rows.loc[np.isclose(means, means.min(), rtol=0, atol=1e-12), "label"])


def config_params(frame: pd.DataFrame) -> list[str]:
    """``params.*`` columns that define a configuration."""
    out_dirs = frame.get("params.paths.output_dir")
    keep = []
    for col in sorted(c for c in frame.columns if c.startswith("params.")):
        name = col[len("params."):]
        if name in NOT_CONFIG or name.startswith(NOT_CONFIG_PREFIXES):
            continue
        if out_dirs is not None and any(  # e.g. callbacks.checkpoint.dirpath = <output_dir>/checkpoints
            isinstance(v, str) and isinstance(d, str) and d and d in v for v, d in zip(frame[col], out_dirs)
        ):
            continue
        keep.append(col)
    return keep


def varying_params(frame: pd.DataFrame, params: list[str]) -> list[str]:
    """Parameters worth a column: two configurations of one model differ in it, or models set it differently.

    A parameter that only one model has (``model.d_model`` for STLM, absent for a baseline) does not get a column;
    the model name says it already.
    """
    models = frame["tags.model"].fillna(MISSING) if "tags.model" in frame else pd.Series(MISSING, index=frame.index)
    varying = []
    for col in params:
        values = frame[col].fillna(MISSING)
        within = any(values[models == m].nunique() > 1 for m in models.unique())
        across = frame[col].dropna().nunique() > 1
        is_target = col.endswith(("._target_", "._partial_"))
        if within or (across and not is_target):
            varying.append(col[len("params."):])
    return varying


def _label(model: str, row: pd.Series, varying: list[str]) -> str:
    extras = [f"{p.removeprefix('model.')}={row[f'params.{p}']}" for p in varying
              if p != "model" and pd.notna(row.get(f"params.{p}"))]
    return " ".join([model, *extras])


def group_runs(frame: pd.DataFrame, rank_by: str = "test/mae_avg") -> Comparison:
    """Group runs into configurations and aggregate their metrics (see the module docstring)."""
    if f"metrics.{rank_by}" not in frame:
        known = sorted(c[len("metrics."):] for c in frame.columns if c.startswith("metrics.test/"))
        raise ValueError(f"rank_by={rank_by!r}: no run logged this metric; choose one of {known}")
    params = config_params(frame)
    varying = varying_params(frame, params)
    metrics = sorted(c[len("metrics."):] for c in frame.columns if c.startswith("metrics.test/"))
    key = frame[params].fillna(MISSING).astype(str).agg("\x1f".join, axis=1) if params else pd.Series("", index=frame.index)
    rows, groups = [], {}
    for _, runs in frame.groupby(key, sort=False):
        first = runs.iloc[0]
        model = str(first.get("tags.model", MISSING)) if pd.notna(first.get("tags.model")) else MISSING
        label = _label(model, first, varying)
        ranked = runs[f"metrics.{rank_by}"]
        best_run = runs.loc[ranked.idxmin(), "run_id"] if ranked.notna().any() else runs.iloc[0]["run_id"]
        row = {"label": label, "model": model, **{p: first.get(f"params.{p}", MISSING) for p in varying},
               "seeds": len(runs), "run_ids": list(runs["run_id"]), "best_run_id": best_run,
               "n_parameters": pd.to_numeric(first.get("params.model.n_parameters"), errors="coerce"),
               "run_s": float(((runs["end_time"] - runs["start_time"]) / 1000).mean())}
        for name, col in PERF.items():
            row[name] = float(runs[col].mean()) if col in runs and runs[col].notna().any() else np.nan
        for m in metrics:
            values = runs[f"metrics.{m}"].dropna()
            row[f"{m} mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{m} std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        rows.append(row)
        groups[label] = list(runs["run_id"])
    assert len(groups) == len(rows), "two configurations got the same label"  # varying_params covers every difference
    table = pd.DataFrame(rows).sort_values(f"{rank_by} mean", kind="stable").reset_index(drop=True)
    horizons = pd.to_numeric(frame.get("params.dataset.horizon", pd.Series(dtype=object)), errors="coerce").dropna().unique()
    return Comparison(table, varying, metrics, rank_by, int(horizons[0]) if len(horizons) == 1 else None, groups)
