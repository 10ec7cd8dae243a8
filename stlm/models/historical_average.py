"""Historical average: each node's mean over the training period at the same time of day (and kind of day).

A profile maps (time-of-day slot, day of week) to a mean per node and channel (scaled units):

* ``week``: one profile per day of the week (7 x slots); most specific, noisiest (few weeks of training);
* ``daytype``: weekdays and weekends (2 x slots), the usual traffic and transit rhythm;
* ``day``: one profile for every day (slots);
* ``auto`` (default): the candidate with the lowest MAE on the **validation** period, among the profiles the
  data allow and smoothing on or off; fitted on training data only. This makes the baseline as strong as the
  data support instead of a strawman.

``smoothing_minutes`` is the standard deviation of a Gaussian kernel over neighbouring slots (across midnight
into the neighbouring day) applied to the sums and counts, so each slot's mean borrows from its neighbours: with a few weeks of
training, one slot of one weekday has only a handful of readings. Slots never observed for a node fall back to
that node's mean over all slots.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from stlm.data.calendar import DAY_OF_WEEK, SLOT
from stlm.data.seasonal import ArrayBlocks, seasonal_sums
from stlm.data.spec import DataSpec

log = logging.getLogger(__name__)

PROFILES = ("auto", "week", "daytype", "day")
_GROUPS = {"week": 7, "daytype": 2, "day": 1}


def _group_of_day(day: np.ndarray, profile: str) -> np.ndarray:
    if profile == "week":
        return day
    if profile == "daytype":
        return (day >= 5).astype(np.int64)
    return np.zeros_like(day)


def _smooth(table: np.ndarray, sigma_slots: float, weekdays: bool) -> np.ndarray:
    """Gaussian smoothing of a [7, n_slots, ...] table along time: one circular axis through the whole week
    (Monday 00:00 follows Sunday 23:xx) when the days are real weekdays, else circular within each day."""
    if not weekdays:
        return gaussian_filter1d(table, sigma_slots, axis=1, mode="wrap")
    flat = table.reshape(table.shape[0] * table.shape[1], *table.shape[2:])
    return gaussian_filter1d(flat, sigma_slots, axis=0, mode="wrap").reshape(table.shape)


def profile_from_sums(total: np.ndarray, count: np.ndarray, profile: str, sigma_slots: float, weekdays: bool = True) -> np.ndarray:
    """Profile [7, n_slots, N, C] (one row per day of week, rows shared within a group) from the sums and
    counts of the observed values per (day of week, slot), [7, n_slots, N, C] (:func:`stlm.data.seasonal.seasonal_sums`
    keyed by the time of week).

    Sums and counts are smoothed along time (across midnight into the neighbouring day when ``weekdays``, i.e.
    the calendar has real days of the week; else circularly within one day), and only then pooled into the
    profile's groups of days. A slot never observed for a node takes the node's mean over all slots.
    """
    node_mean = total.sum((0, 1)) / np.maximum(count.sum((0, 1)), 1)
    if sigma_slots > 0:
        total, count = _smooth(total, sigma_slots, weekdays), _smooth(count, sigma_slots, weekdays)
    group = _group_of_day(np.arange(7), profile)
    pooled_total = np.zeros((_GROUPS[profile],) + total.shape[1:])
    pooled_count = np.zeros_like(pooled_total)
    np.add.at(pooled_total, group, total)
    np.add.at(pooled_count, group, count)
    means = np.where(pooled_count > 1e-9, pooled_total / np.maximum(pooled_count, 1e-9), node_mean)
    return means[group]


def fit_profile(values, mask, calendar, n_slots: int, profile: str, sigma_slots: float, weekdays: bool = True) -> np.ndarray:
    """:func:`profile_from_sums` of arrays in memory: values/mask [T, N, C], calendar [T, K] (slot, day, ...)."""
    keys = calendar[:, DAY_OF_WEEK] * n_slots + calendar[:, SLOT]
    total, count = seasonal_sums(ArrayBlocks(values, mask), keys, 7 * n_slots, 0, len(values))
    shape = (7, n_slots) + values.shape[1:]
    return profile_from_sums(total.reshape(shape), count.reshape(shape), profile, sigma_slots, weekdays)


def time_of_week(calendar: np.ndarray, n_slots: int, use_days: bool) -> np.ndarray:
    """[T] key ``day * n_slots + slot`` of every step (day 0 when the day of week is off)."""
    day = calendar[:, DAY_OF_WEEK] if use_days else np.zeros(len(calendar), dtype=np.int64)
    return day * n_slots + np.minimum(calendar[:, SLOT], n_slots - 1)


class HistoricalAverage(nn.Module):
    """Forecast = the profile at each target's (slot, day); see the module docstring for the options."""

    def __init__(self, spec: DataSpec, profile: str = "auto", smoothing_minutes: float = 10.0):
        super().__init__()
        if profile not in PROFILES:
            raise ValueError(f"HistoricalAverage: profile={profile!r}; choose one of {list(PROFILES)}")
        if profile in ("week", "daytype") and spec.days_per_week == 0:
            raise ValueError(
                f"HistoricalAverage: profile={profile!r} needs the day-of-week feature, which is off for this data "
                "(the training period does not cover every weekday); use profile=day or auto"
            )
        self.profile_name = profile
        self.sigma_slots = smoothing_minutes / spec.interval_minutes
        self.n_slots = max(spec.steps_per_day, 1)
        self.use_days = spec.days_per_week > 0
        self.chosen = profile
        self.register_buffer("profile", torch.zeros(7 * self.n_slots, spec.n_nodes, spec.n_channels))

    def _candidates(self) -> list[tuple[str, float]]:
        if self.profile_name != "auto":
            return [(self.profile_name, self.sigma_slots)]
        profiles = ["week", "daytype", "day"] if self.use_days else ["day"]
        return [(p, s) for p in profiles for s in (0.0, self.sigma_slots)]

    def fit_from_data(self, datamodule) -> None:
        """Fit on the training period; with ``auto``, keep the candidate with the lowest validation MAE."""
        scaler, calendar = datamodule.scaler, datamodule.calendar
        keys = time_of_week(calendar, self.n_slots, self.use_days)
        (a, b), N, C = datamodule.periods["train"], datamodule.spec.n_nodes, datamodule.spec.n_channels
        total, count = seasonal_sums(datamodule.series, keys, 7 * self.n_slots, a, b, transform=scaler.transform)
        total, count = total.reshape(7, self.n_slots, N, C), count.reshape(7, self.n_slots, N, C)
        val = datamodule.period("val")
        val_keys = time_of_week(val["calendar"], self.n_slots, self.use_days)
        val_values, val_mask = scaler.transform(val["values"]), val["mask"]
        best = None
        for profile, sigma in self._candidates():
            table = profile_from_sums(total, count, profile, sigma, weekdays=self.use_days)
            flat = table.reshape(7 * self.n_slots, N, C)
            error = np.abs(flat[val_keys] - val_values)[val_mask].mean() if val_mask.any() else 0.0
            if best is None or error < best[0]:
                best = (error, profile, sigma, flat)
        _, profile, sigma, table = best
        self.chosen = f"{profile}, smoothing {sigma * datamodule.spec.interval_minutes:g} min"
        log.info("historical average profile: %s", self.chosen)
        self.profile.copy_(torch.from_numpy(table.astype(np.float32)))

    def lookup(self, calendar: torch.Tensor) -> torch.Tensor:
        """Profile values at the given (slot, day) indices: calendar [B, S, 2] -> [B, S, N, C]."""
        day = calendar[..., 1] if self.use_days else torch.zeros_like(calendar[..., 1])
        return self.profile[day * self.n_slots + calendar[..., 0].clamp_max(self.n_slots - 1)]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.lookup(batch["y_time"])
