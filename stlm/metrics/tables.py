"""Plain-text tables of per-horizon metrics, printed at the end of a run."""

from __future__ import annotations


def metrics_table(
    rows: dict[str, dict[str, float]], horizons: list[int], metrics=("mae", "rmse", "mape"), suffixes: list[str] | None = None
) -> str:
    """One line per model: ``metric@h`` columns for the chosen horizons plus the average over all horizons.

    ``rows`` maps a model name to its ``{"mae_h3": ..., "mae_avg": ...}`` test metrics. ``suffixes`` replaces
    the ``h{horizon}`` key suffixes (grids: ``["lead6h", "lead24h"]`` for ``rmse_lead6h``, ...).
    """
    suffixes = suffixes if suffixes is not None else [f"h{h}" for h in horizons]
    columns = [(m, s) for m in metrics for s in suffixes] + [(m, "avg") for m in metrics]
    header = ["model"] + [f"{m.upper()} {h}" for m, h in columns]
    lines = [header]
    for name, values in rows.items():
        cells = [name]
        for m, h in columns:
            value = values.get(f"{m}_{h}")
            cells.append("-" if value is None else f"{value:.3f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in lines[1:]]
    return "\n".join(out)
