"""PNG plots of a comparison (matplotlib, Agg backend: no display needed).

* ``horizon_<metric>.png``: test metric against the forecast step, one line per configuration, mean over seeds
  with a ±std band;
* ``learning_curves.png``: each chosen metric's history (MLflow ``get_metric_history``) against the optimizer
  step, mean over the seeds of each configuration. A fitted baseline has one validation point (step 0).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from stlm.compare.table import Comparison
from stlm.io.figures import pyplot, save_figure


def plot_horizons(comp: Comparison, metric: str, path: str | Path) -> Path | None:
    """Test ``metric`` (mae, rmse, mape) against the horizon step; None when no run logged it per horizon."""
    pattern = re.compile(rf"^test/{metric}_h(\d+)$")
    steps = sorted(int(m.group(1)) for k in comp.metrics if (m := pattern.match(k)))
    if not steps:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in comp.rows.iterrows():
        mean = np.array([row[f"test/{metric}_h{h} mean"] for h in steps], dtype=float)
        std = np.array([row[f"test/{metric}_h{h} std"] for h in steps], dtype=float)
        line, = ax.plot(steps, mean, marker="o", ms=3, label=f"{row['label']} (n={row['seeds']})")
        if np.isfinite(std).any():
            ax.fill_between(steps, mean - np.nan_to_num(std), mean + np.nan_to_num(std), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("forecast step (horizon)")
    ax.set_ylabel(f"test {metric.upper()}")
    ax.set_title(f"test {metric.upper()} by horizon (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _mean_history(client, run_ids: Sequence[str], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the mean value over runs at each step (steps any run logged)."""
    by_step: dict[int, list[float]] = {}
    for run_id in run_ids:
        for m in client.get_metric_history(run_id, key):
            by_step.setdefault(m.step, []).append(m.value)
    steps = np.array(sorted(by_step), dtype=float)
    return steps, np.array([np.mean(by_step[int(s)]) for s in steps], dtype=float)


def plot_learning_curves(client, comp: Comparison, keys: Sequence[str], path: str | Path) -> Path | None:
    """One panel per metric key (e.g. ``train/loss_epoch``, ``val/mae_avg``); None when no run has any history."""
    histories = {k: {label: _mean_history(client, runs, k) for label, runs in comp.groups.items()} for k in keys}
    keys = [k for k in keys if any(len(s) for s, _ in histories[k].values())]
    if not keys:
        return None
    plt = pyplot()
    colors = {label: f"C{i % 10}" for i, label in enumerate(comp.groups)}  # one colour per configuration
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, (steps, values) in histories[key].items():
            if len(steps):
                ax.plot(steps, values, marker="o", ms=3, label=label, color=colors[label])
        ax.set_xlabel("optimizer step")
        ax.set_title(f"{key} (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
