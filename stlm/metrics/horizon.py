"""One metric family for every data set: masked, area-weighted errors per forecast horizon, accumulated exactly.

:class:`ForecastMetrics` sums, over an epoch and per horizon ``h`` and channel ``c``, the weighted absolute and
squared errors, the weights of the observed targets, the MAPE terms and (with a climatology) the anomaly
products of :mod:`stlm.metrics.masked`. States are sums, so they reduce exactly across batches and DDP ranks.
Token weights come from the data's geometry (1 per sensor, cos latitude per grid cell), so the same code gives
the BasicTS-style sensor metrics and the WeatherBench-style latitude-weighted grid metrics.

Keys (``compute()``), in the two spellings users know (:func:`horizon_key`, the one display rule):

* ``keys="step"``: ``mae_h1 .. mae_h12``, ``rmse_h12``, ``mape_h3`` (sensors: ``test/mae_h12`` is 60 min at
  5-minute steps);
* ``keys="lead"``: ``rmse_lead6h``, ``mae_lead24h``, ``acc_lead6h`` (grids: the lead time in the key).

``*_avg`` pools all horizons (``average="pooled"``: sum of numerators / sum of weights; RMSE = sqrt of the pooled
MSE, as papers on sensor networks report it) or averages the per-horizon values (``average="lead_mean"``: the
WeatherBench mean over lead times). Values pool the channels; ``per_channel`` adds ``<channel>/<key>`` for
each channel when there are several (variables in different units). MAPE is in percent and skips targets with
``|y| <= mape_min_abs``; ACC is reported when a climatology is given.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric

from stlm.metrics.masked import weight_mask

KEY_STYLES = ("step", "lead")
AVERAGES = ("pooled", "lead_mean")
MONTH_MINUTES = 30.436875 * 1440  # a mean Gregorian month


def lead_name(minutes: float) -> str:
    """``6h`` for whole hours, ``30min`` otherwise, ``3mo`` for monthly steps (the lead in a metric key)."""
    if minutes >= 28 * 1440:
        return f"{int(round(minutes / MONTH_MINUTES))}mo"
    hours = minutes / 60
    return f"{int(round(hours))}h" if abs(hours - round(hours)) < 1e-9 else f"{minutes:g}min"


def suffix_minutes(suffix: str) -> float:
    """The sort order of a horizon key suffix: ``h3`` -> 3 (steps), ``lead6h`` -> 360, ``lead30min`` -> 30,
    ``lead3mo`` -> 3 months in minutes. Suffixes of one table share a style, so steps and minutes never mix."""
    match = re.fullmatch(r"(?:h(\d+)|lead([\d.]+)(h|min|mo))", suffix)
    if match is None:
        raise ValueError(f"metric key suffix {suffix!r} is neither 'h<step>' nor 'lead<number><h|min|mo>'")
    if match[1] is not None:
        return float(match[1])
    value, unit = float(match[2]), match[3]
    return value * {"h": 60.0, "min": 1.0, "mo": MONTH_MINUTES}[unit]


def horizon_key(h: int, interval_minutes: float, style: str) -> str:
    """The key suffix of horizon ``h`` (1-based): ``h12`` (``step``) or ``lead6h`` (``lead``)."""
    if style not in KEY_STYLES:
        raise ValueError(f"dataset.metrics.keys={style!r}; choose one of {list(KEY_STYLES)}")
    return f"h{h}" if style == "step" else f"lead{lead_name(h * interval_minutes)}"


def reported_horizons(horizon: int) -> list[int]:
    """The horizons a summary table shows: 1, a quarter, a half and all of ``horizon`` (3, 6, 12 of 12)."""
    return sorted({1, horizon // 4, horizon // 2, horizon} - {0})


SUMMARY_METRICS = ("mae", "rmse", "mape", "acc", "crps", "coverage90")


def summary_columns(metrics: dict[str, float]) -> tuple[list[str], list[str]]:
    """The metric names a summary table shows (those present) and the key suffixes of its horizons
    (:func:`reported_horizons`), read from the keys themselves: one rule for every data set and entry point."""
    names = [m for m in SUMMARY_METRICS if f"{m}_avg" in metrics]
    # Sorted by lead, not by key order: metrics read back from JSON or a logger come sorted as strings
    # (lead10h before lead9h).
    suffixes = sorted((k[len("mae_"):] for k in metrics if k.startswith("mae_") and k != "mae_avg"), key=suffix_minutes)
    return names, [suffixes[h - 1] for h in reported_horizons(len(suffixes))] if suffixes else []


def keyed_values(groups: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]], suffixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Flat metric keys from ``{prefix: {name: (per_horizon [H], average)}}``: ``<prefix><name>_<suffix>`` per
    horizon and ``<prefix><name>_avg`` (the one key layout of every metric family)."""
    out = {}
    for prefix, values in groups.items():
        for name, (per_h, avg) in values.items():
            for h, suffix in enumerate(suffixes):
                out[f"{prefix}{name}_{suffix}"] = per_h[h].float()
            out[f"{prefix}{name}_avg"] = avg.float()
    return out


class ForecastMetrics(Metric):
    """Per-horizon MAE, RMSE, MAPE and ACC (module docstring).

    Args:
        horizon: number of horizons H.
        interval_minutes: length of one step (names the leads).
        channels: C channel names (for per-channel keys).
        weights: [N] token weights (None: all 1).
        climatology: [K, N, C] climatology in original units, indexed by ``y_time[..., column]``; None: no ACC.
        column: the calendar column that indexes the climatology (:mod:`stlm.data.calendar`).
        keys, average, per_channel, mape, mape_min_abs: see the module docstring.
    """

    full_state_update = False

    def __init__(
        self,
        horizon: int,
        interval_minutes: float = 5.0,
        channels: Sequence[str] = ("value",),
        weights: torch.Tensor | np.ndarray | None = None,
        climatology: torch.Tensor | np.ndarray | None = None,
        column: int = 0,
        keys: str = "step",
        average: str = "pooled",
        per_channel: bool = False,
        mape: bool = True,
        mape_min_abs: float = 0.0,
        **metric_kwargs,
    ):
        super().__init__(**metric_kwargs)
        if average not in AVERAGES:
            raise ValueError(f"dataset.metrics.average={average!r}; choose one of {list(AVERAGES)}")
        self.horizon, self.channels, self.column = horizon, list(channels), column
        self.suffixes = [horizon_key(h + 1, interval_minutes, keys) for h in range(horizon)]
        self.average, self.per_channel, self.mape, self.mape_min_abs = average, per_channel, mape, mape_min_abs
        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.register_buffer("weights", w, persistent=False)
        clim = None if climatology is None else torch.as_tensor(climatology, dtype=torch.float32)
        self.register_buffer("climatology", clim, persistent=False)
        C = len(self.channels)
        for name in ("sq", "abs", "count", "ape", "ape_count", "fo", "ff", "oo"):
            self.add_state(name, default=torch.zeros(horizon, C, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, batch, mask: torch.Tensor | None = None) -> None:
        """``update(pred, batch)`` with ``batch["y"]``, ``["mask"]`` (and ``["y_time"]`` for ACC), or
        ``update(pred, target, mask)``."""
        if isinstance(batch, dict):
            target, mask = batch["y"], batch["mask"]
        else:
            target, batch = batch, {}
        C = len(self.channels)
        if pred.shape != target.shape or mask.shape != target.shape or pred.ndim != 4 or pred.shape[1] != self.horizon \
                or pred.shape[3] != C:
            raise ValueError(
                f"ForecastMetrics: pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} "
                f"must all be [B, H={self.horizon}, N, C={C}]"
            )
        pred, target = pred.double(), target.double()
        wm = weight_mask(mask.double(), None if self.weights is None else self.weights.double())
        err = torch.where(wm > 0, pred - target, 0.0)  # missing targets count for nothing, even if NaN
        self.sq += (err**2 * wm).sum(dim=(0, 2))
        self.abs += (err.abs() * wm).sum(dim=(0, 2))
        self.count += wm.sum(dim=(0, 2))
        if self.mape:
            relevant = (wm > 0) & (target.abs() > self.mape_min_abs)
            rw = torch.where(relevant, wm, 0.0)
            self.ape += (torch.where(relevant, err.abs() / target.abs().clamp_min(1e-12), 0.0) * rw).sum(dim=(0, 2))
            self.ape_count += rw.sum(dim=(0, 2))
        if self.climatology is not None:
            if "y_time" not in batch:
                raise ValueError("ForecastMetrics with a climatology needs update(pred, batch) with batch['y_time']")
            clim = self.climatology[batch["y_time"][..., self.column]].double()  # [B, H, N, C]
            af, ao = torch.where(wm > 0, pred - clim, 0.0), torch.where(wm > 0, target - clim, 0.0)
            self.fo += (af * ao * wm).sum(dim=(0, 2))
            self.ff += (af**2 * wm).sum(dim=(0, 2))
            self.oo += (ao**2 * wm).sum(dim=(0, 2))

    def _values(self, sq, ab, count, ape, ape_count, fo, ff, oo) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-horizon values [H] and their average, from states pooled over the channels ([H] each)."""
        floor = lambda t: t.clamp_min(1e-12)
        per_h = {"mae": ab / floor(count), "rmse": (sq / floor(count)).sqrt()}
        pooled = {"mae": ab.sum() / floor(count.sum()), "rmse": (sq.sum() / floor(count.sum())).sqrt()}
        if self.mape:
            per_h["mape"] = 100.0 * ape / floor(ape_count)
            pooled["mape"] = 100.0 * ape.sum() / floor(ape_count.sum())
        if self.climatology is not None:
            per_h["acc"] = fo / floor((ff * oo).sqrt())
            pooled["acc"] = fo.sum() / floor((ff.sum() * oo.sum()).sqrt())
        if self.average == "lead_mean":
            pooled = {name: values.mean() for name, values in per_h.items()}
        return {name: (per_h[name], pooled[name]) for name in per_h}

    def compute(self) -> dict[str, torch.Tensor]:
        states = (self.sq, self.abs, self.count, self.ape, self.ape_count, self.fo, self.ff, self.oo)
        groups = {"": self._values(*(s.sum(1) for s in states))}
        if self.per_channel and len(self.channels) > 1:
            groups.update({f"{ch}/": self._values(*(s[:, c] for s in states)) for c, ch in enumerate(self.channels)})
        return keyed_values(groups, self.suffixes)
