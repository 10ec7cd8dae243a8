"""A :class:`~stlm.compare.table.Comparison` as terminal text, Markdown and CSV.

Text and Markdown show the chosen metrics at the chosen horizons (plus the average over all horizons) as
``mean ± std``; the best mean of each metric column is marked (``*`` in text, bold in Markdown). The CSV keeps
every test metric as separate ``mean`` and ``std`` columns, unformatted, for further analysis.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from stlm.compare.table import Comparison


def metric_columns(comp: Comparison, metrics: Sequence[str], horizons: Sequence[int] | None) -> list[str]:
    """Test metric keys for the table: ``test/{m}_h{k}`` for each horizon, then ``test/{m}_avg``."""
    if horizons is None:
        H = comp.horizon or 12
        horizons = sorted({1, H // 4, H // 2, H} - {0})
    keys = [f"test/{m}_h{h}" for m in metrics for h in horizons] + [f"test/{m}_avg" for m in metrics]
    present = [k for k in keys if k in comp.metrics]
    if not present:
        raise ValueError(f"metrics={list(metrics)} horizons={list(horizons)}: none of these test metrics was logged; "
                         f"logged: {comp.metrics}")
    return present


def _num(value, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _cell(row: pd.Series, key: str) -> str:
    mean, std = row[f"{key} mean"], row[f"{key} std"]
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _header(key: str) -> str:
    metric, _, horizon = key.removeprefix("test/").rpartition("_")
    return f"{metric.upper()} {horizon}"


def _cells(comp: Comparison, keys: list[str], mark) -> tuple[list[str], list[list[str]]]:
    header = ["model", *comp.varying, "seeds", "params", "train s", "train samples/s"] + [_header(k) for k in keys]
    best = {k: comp.best(k) for k in keys}
    lines = []
    for _, row in comp.rows.iterrows():
        cells = [row["model"], *[str(row[p]) for p in comp.varying], str(row["seeds"]),
                 _num(row["n_parameters"], ",.0f"), _num(row["train_s"], ".1f"), _num(row["train_samples_per_s"], ",.0f")]
        cells += [mark(_cell(row, k)) if row["label"] in best[k] else _cell(row, k) for k in keys]
        lines.append(cells)
    return header, lines


def to_text(comp: Comparison, metrics: Sequence[str] = ("mae", "rmse"), horizons: Sequence[int] | None = None) -> str:
    """An aligned plain-text table for the terminal; ``*`` marks the best mean of each metric column."""
    keys = metric_columns(comp, metrics, horizons)
    header, lines = _cells(comp, keys, lambda c: f"*{c}")
    rows = [header, *lines]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(header), "  ".join("-" * w for w in widths), *[fmt(r) for r in lines]]
    return "\n".join(out) + "\n* best (lowest mean) per column; mean ± std over seeds (std with ddof=1)"


def to_markdown(comp: Comparison, metrics: Sequence[str] = ("mae", "rmse"), horizons: Sequence[int] | None = None) -> str:
    """A Markdown table; bold marks the best mean of each metric column."""
    keys = metric_columns(comp, metrics, horizons)
    header, lines = _cells(comp, keys, lambda c: f"**{c}**")
    n_text = 1 + len(comp.varying)
    align = ["---"] * n_text + ["---:"] * (len(header) - n_text)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + "\n"


def to_csv(comp: Comparison) -> str:
    """Every test metric, unformatted: one row per configuration, ``<metric> mean`` and ``<metric> std`` columns."""
    frame = comp.rows.copy()
    frame["run_ids"] = frame["run_ids"].map(";".join)
    return frame.to_csv(index=False)
