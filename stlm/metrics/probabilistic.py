"""Scores of probabilistic forecasts: CRPS (from quantiles or ensemble members), pinball loss, interval coverage.

A probabilistic forecast of one target ``y`` (a token, channel and horizon) is either

* Q **quantiles** ``q_1 <= .. <= q_Q`` at levels ``tau_1 < .. < tau_Q`` in (0, 1), or
* M **ensemble members** ``x_1 .. x_M`` (equally likely samples).

Scores, per target (lower is better except coverage, which should equal the nominal level):

* pinball loss ``rho_tau(y, q) = (1[y < q] - tau) (q - y)``, averaged over the levels (the quantile head's loss);
* CRPS from quantiles: ``2 / Q * sum_i rho_tau_i(y, q_i)``. With levels spread evenly over (0, 1) this
  approaches ``CRPS(F, y) = integral (F(z) - 1[y <= z])^2 dz`` as Q grows (Berrisch & Ziel 2023); with the
  default 19 levels 0.05 .. 0.95 it leaves out the outer tails, so compare models only on the same levels;
* CRPS from members, the *fair* estimator that WeatherBench 2 reports (unbiased for the CRPS of the distribution
  the members are drawn from, so a small ensemble is not penalised for being small):
  ``mean_i |x_i - y| - 1 / (2 M (M - 1)) sum_{i,j} |x_i - x_j|``;
* coverage of the central interval ``[q_a, q_{1-a}]`` (1 when ``y`` lies in it) and its width.

The per-target formulas are scoringrules' (torch backend, so they run on the training device and keep the
gradient); this module adds the masking, the token weights and the per-horizon accumulation that
:class:`~stlm.metrics.horizon.ForecastMetrics` uses for the point metrics, and the same keys (``crps_h12``,
``crps_lead6h``, ``coverage90_h12``, ``width90_lead24h``, ``pinball_avg``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scoringrules
import torch
from torch import nn
from torchmetrics import Metric

from stlm.metrics.horizon import AVERAGES, horizon_key, keyed_values
from stlm.metrics.masked import weight_mask
from stlm.nn.quantiles import median_index

DEFAULT_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, .., 0.95


def check_levels(levels: Sequence[float], name: str = "model.quantiles") -> torch.Tensor:
    """``levels`` as a float64 tensor [Q], after checking they are strictly increasing and inside (0, 1)."""
    t = torch.as_tensor(list(levels), dtype=torch.float64)
    if t.ndim != 1 or len(t) < 2 or bool((t <= 0).any() | (t >= 1).any()) or bool((t.diff() <= 0).any()):
        raise ValueError(f"{name}={list(levels)}: give at least two strictly increasing levels inside (0, 1), "
                         "e.g. [0.05, 0.25, 0.5, 0.75, 0.95]")
    return t


def parse_levels(value, name: str = "model.quantiles") -> tuple[float, ...] | None:
    """The quantile levels a config names: null (a point forecast), ``default`` (:data:`DEFAULT_LEVELS`) or a
    list of levels (checked by :func:`check_levels`)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value != "default":
            raise ValueError(f"{name}={value!r}: give null (point forecasts), default (0.05 .. 0.95 in steps of 0.05) "
                             "or a list of levels, e.g. [0.05, 0.5, 0.95]")
        return DEFAULT_LEVELS
    levels = tuple(float(v) for v in check_levels(list(value), name))
    if not any(abs(v - 0.5) < 1e-9 for v in levels):
        raise ValueError(f"{name}={list(levels)}: include the median 0.5 (the point forecast every MAE is scored on)")
    return levels


def interval_indices(levels: torch.Tensor, coverage: float) -> tuple[int, int]:
    """Indices of the levels ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``: the central interval."""
    lower, upper = (1 - coverage) / 2, (1 + coverage) / 2
    found = [int(torch.argmin((levels - p).abs())) for p in (lower, upper)]
    if any(abs(float(levels[i]) - p) > 1e-6 for i, p in zip(found, (lower, upper))):
        raise ValueError(
            f"a {coverage:.0%} interval needs the quantile levels {lower:g} and {upper:g}; the levels are "
            f"{[round(float(v), 6) for v in levels]}: add them to model.quantiles or change the interval"
        )
    return found[0], found[1]


def pinball(quantiles: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss over the levels: quantiles [..., Q], target [...], levels [Q] -> [...]."""
    score = scoringrules.quantile_score(target.unsqueeze(-1), quantiles, levels.to(quantiles), backend="torch")
    return score.mean(-1)


def crps_from_quantiles(quantiles: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """CRPS approximated by ``2 x`` the mean pinball loss (module docstring): [..., Q], [...], [Q] -> [...]."""
    return scoringrules.crps_quantile(target, quantiles, levels.to(quantiles), backend="torch")


def crps_ensemble(members: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fair CRPS of an ensemble (module docstring): members [..., M] (M >= 2), target [...] -> [...]."""
    if members.shape[-1] < 2:
        raise ValueError(f"crps_ensemble: the fair CRPS needs at least 2 members, got {members.shape[-1]}")
    return scoringrules.crps_ensemble(target, members, estimator="fair", backend="torch")


class ProbabilisticMetrics(Metric):
    """Per-horizon CRPS, pinball loss, coverage and width of the central interval (module docstring).

    ``update(forecast, batch)`` with forecast [B, H, N, C, K] and ``batch["y"]``, ``["mask"]`` [B, H, N, C]:
    K quantiles at ``levels`` (quantile mode), or K ensemble members (``levels=None``; the interval is then
    read from the members' empirical quantiles).

    Args:
        horizon, interval_minutes, channels, weights, keys, average, per_channel: as
            :class:`~stlm.metrics.horizon.ForecastMetrics` (the same keys and averages).
        levels: the Q quantile levels, or None for ensemble members.
        coverage: nominal level of the reported central interval (0.9: ``coverage90_*``, ``width90_*``).
    """

    full_state_update = False
    SCORES = ("crps", "pinball", "covered", "width")

    def __init__(
        self,
        horizon: int,
        interval_minutes: float = 5.0,
        channels: Sequence[str] = ("value",),
        weights: torch.Tensor | np.ndarray | None = None,
        levels: Sequence[float] | None = DEFAULT_LEVELS,
        coverage: float = 0.9,
        keys: str = "step",
        average: str = "pooled",
        per_channel: bool = False,
        **metric_kwargs,
    ):
        super().__init__(**metric_kwargs)
        if average not in AVERAGES:
            raise ValueError(f"dataset.metrics.average={average!r}; choose one of {list(AVERAGES)}")
        if not 0 < coverage < 1:
            raise ValueError(f"coverage={coverage}: the central interval's level must lie in (0, 1), e.g. 0.9")
        self.horizon, self.channels, self.coverage = horizon, list(channels), coverage
        self.suffixes = [horizon_key(h + 1, interval_minutes, keys) for h in range(horizon)]
        self.average, self.per_channel = average, per_channel
        self.levels = None if levels is None else check_levels(levels)
        self.bounds = None
        if self.levels is not None:
            try:
                self.bounds = interval_indices(self.levels, coverage)
            except ValueError:  # the levels hold no such interval: no coverage / width keys
                self.bounds = ()
        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.register_buffer("weights", w, persistent=False)
        for name in (*self.SCORES, "count"):
            self.add_state(name, default=torch.zeros(horizon, len(self.channels), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, forecast: torch.Tensor, batch: dict) -> None:
        target, mask = batch["y"], batch["mask"]
        if forecast.ndim != 5 or forecast.shape[:4] != target.shape or mask.shape != target.shape \
                or target.shape[1] != self.horizon or target.shape[3] != len(self.channels):
            raise ValueError(
                f"ProbabilisticMetrics: forecast {tuple(forecast.shape)} must be [B, H={self.horizon}, N, "
                f"C={len(self.channels)}, K] over target and mask {tuple(target.shape)} [B, H, N, C]"
            )
        forecast = forecast.double()
        wm = weight_mask(mask.double(), None if self.weights is None else self.weights.double())
        observed = wm > 0
        y = torch.where(observed, target.double(), 0.0)  # missing targets count for nothing, even if NaN
        forecast = torch.where(observed.unsqueeze(-1), forecast, 0.0)
        if self.levels is None:
            crps = crps_ensemble(forecast, y)
            probs = torch.tensor([(1 - self.coverage) / 2, (1 + self.coverage) / 2], dtype=forecast.dtype, device=forecast.device)
            lower, upper = torch.quantile(forecast, probs, dim=-1)
            pin = torch.zeros_like(y)
        else:
            levels = self.levels.to(forecast.device)
            crps = crps_from_quantiles(forecast, y, levels)
            pin = pinball(forecast, y, levels)
            lower, upper = (forecast[..., self.bounds[0]], forecast[..., self.bounds[1]]) if self.bounds else (y, y)
        scores = {"crps": crps, "pinball": pin, "covered": ((y >= lower) & (y <= upper)).double(), "width": upper - lower}
        for name, score in scores.items():
            getattr(self, name).add_((torch.where(observed, score, 0.0) * wm).sum(dim=(0, 2)))
        self.count += wm.sum(dim=(0, 2))

    def _values(self, states: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-horizon values [H] and their average, from states pooled over the channels ([H] each)."""
        count = states["count"].clamp_min(1e-12)
        names = {"crps": "crps"}
        if self.bounds != ():
            names.update({"covered": f"coverage{round(100 * self.coverage):d}", "width": f"width{round(100 * self.coverage):d}"})
        if self.levels is not None:
            names["pinball"] = "pinball"
        out = {}
        for state, key in names.items():
            per_h = states[state] / count
            pooled = per_h.mean() if self.average == "lead_mean" else states[state].sum() / count.sum()
            out[key] = (per_h, pooled)
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        states = {name: getattr(self, name) for name in (*self.SCORES, "count")}
        groups = {"": self._values({k: s.sum(1) for k, s in states.items()})}
        if self.per_channel and len(self.channels) > 1:
            groups.update({f"{ch}/": self._values({k: s[:, c] for k, s in states.items()}) for c, ch in enumerate(self.channels)})
        return keyed_values(groups, self.suffixes)


def ensemble_median(members: torch.Tensor) -> torch.Tensor:
    """The point forecast of an ensemble: the median of its members [..., M] -> [...] (the mean of the two middle
    members when M is even)."""
    return torch.quantile(members, 0.5, dim=-1) if members.shape[-1] % 2 == 0 else members.median(-1).values


class BandForecastMetrics(nn.Module):
    """The scores of quantile forecasts [B, H, N, C, Q] or ensembles [B, H, N, C, M]: the point metrics of the
    median (``mae_h12``, ``rmse_lead6h``, ... keep their meaning; for an ensemble the members' median) and the
    band scores (``crps_h12``, ``coverage90_h12``, ...; the fair CRPS for an ensemble).

    Args:
        point: the data's point metric (:class:`~stlm.metrics.horizon.ForecastMetrics`).
        bands: a :class:`ProbabilisticMetrics` with the forecast's levels (None: ensemble members).
    """

    def __init__(self, point: Metric, bands: ProbabilisticMetrics):
        super().__init__()
        self.point, self.bands = point, bands
        self.median = None if bands.levels is None else median_index(bands.levels)

    def update(self, forecast: torch.Tensor, batch: dict) -> None:
        self.point.update(ensemble_median(forecast) if self.median is None else forecast[..., self.median], batch)
        self.bands.update(forecast, batch)

    def compute(self) -> dict[str, torch.Tensor]:
        return {**self.point.compute(), **self.bands.compute()}

    def reset(self) -> None:
        self.point.reset()
        self.bands.reset()


def band_metric_factory(point_factory, band_factory, levels):
    """``f(mape_min_abs=..., **metric_kwargs) -> BandForecastMetrics`` from the data's two factories, for
    quantiles at ``levels`` or (None) ensemble members (``mape_min_abs`` is the point metric's;
    ``sync_on_compute`` and the like go to both)."""
    def build(mape_min_abs: float = 0.0, **metric_kwargs) -> BandForecastMetrics:
        point = point_factory(mape_min_abs=mape_min_abs, **metric_kwargs)
        return BandForecastMetrics(point, band_factory(levels=levels, **metric_kwargs))
    return build
