"""Seasonal tables: the training-period mean of every token at each value of a calendar key.

The sensor historical average (a profile per time-of-day slot and day of week) and the grid climatology (a mean
per hour of day, day of year or month) are the same thing keyed by different calendar columns
(:mod:`stlm.data.calendar`). Both are built from :func:`seasonal_sums`, which reads the training period of any
:class:`~stlm.data.sources.base.Series` block by block (a lazy archive is never loaded whole) and accumulates,
per key, the sum and the count of the observed values:

    total[k, n, c] = sum over steps t with key(t) = k of observed value[t, n, c]        count likewise

Climatology kinds (``dataset.climatology``): ``hour_of_day`` (key: the time-of-day slot), ``day_of_year``,
``month_of_year``, or ``auto``: day of year when training covers every later day of the year (several years of
data), else month of year for monthly (or coarser) steps when training covers every later month, else hour of day.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from stlm.data.calendar import DAY_OF_YEAR, MONTH, SLOT

CLIMATOLOGY_KINDS = ("auto", "hour_of_day", "day_of_year", "month_of_year")
# Which calendar column keys each climatology, and how many values it takes (hour of day: the slots).
CLIMATOLOGY_COLUMNS = {"hour_of_day": SLOT, "day_of_year": DAY_OF_YEAR, "month_of_year": MONTH}
SEASON_WORDS = {"day_of_year": "days of the year", "month_of_year": "months of the year"}
FIXED_SIZES = {"day_of_year": 366, "month_of_year": 12}
MAX_BLOCK_VALUES = 16_000_000  # values read per block (64 MB of float32; float64 temporaries bound the peak)


def block_steps(n_nodes: int, n_channels: int) -> int:
    """Steps per read that keep a block under :data:`MAX_BLOCK_VALUES` values."""
    return max(1, MAX_BLOCK_VALUES // max(n_nodes * n_channels, 1))


class ArrayBlocks:
    """Arrays in memory read as a series: ``values``/``mask`` [T, N, C] give ``read(a, b)`` [b-a, N, C] with NaN
    where the mask is off, so the block readers (:func:`seasonal_sums`, ``StandardScaler.fit_series``) serve
    arrays too and the statistics are written once."""

    def __init__(self, values: np.ndarray, mask: np.ndarray):
        self.values, self.mask = values, mask.astype(bool)
        self.n_steps, self.n_nodes, self.n_channels = values.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.where(self.mask[start:stop], self.values[start:stop], np.nan)


def seasonal_sums(series, keys: np.ndarray, size: int, start: int, stop: int, transform=None) -> tuple[np.ndarray, np.ndarray]:
    """(total, count) [size, N, C] float64 of the observed values of steps ``start .. stop-1`` per key.

    Args:
        series: a :class:`~stlm.data.sources.base.Series` (read block by block).
        keys: [T] int key of every step of the series (e.g. a calendar column), in ``[0, size)``.
        transform: optional function applied to each block's values first (e.g. a scaler's ``transform``).
    """
    total = np.zeros((size, series.n_nodes, series.n_channels))
    count = np.zeros_like(total)
    step = block_steps(series.n_nodes, series.n_channels)
    for a in range(start, stop, step):
        b = min(a + step, stop)
        raw = series.read(a, b)
        observed = np.isfinite(raw)
        values = np.where(observed, raw, np.float32(0.0))
        if transform is not None:
            values = np.where(observed, transform(values), 0.0)
        m = observed.astype(np.float64)
        block_keys = keys[a:b]
        for k in np.unique(block_keys):
            rows = block_keys == k
            total[k] += (values[rows] * m[rows]).sum(0)
            count[k] += m[rows].sum(0)
    return total, count


def choose_climatology(kind: str, calendar: np.ndarray, train: tuple[int, int], freq: pd.Timedelta, origin: str) -> str:
    """Resolve ``auto`` (module docstring) and check that the training period covers the chosen key."""
    if kind not in CLIMATOLOGY_KINDS:
        raise ValueError(f"dataset.climatology={kind!r}; choose one of {list(CLIMATOLOGY_KINDS)}")
    a, b = train

    def unseen(column: int) -> list[int]:
        return sorted(set(calendar[b:, column].tolist()) - set(calendar[a:b, column].tolist()))

    if kind == "auto":
        if not unseen(DAY_OF_YEAR):
            return "day_of_year"
        if freq >= pd.Timedelta(days=28) and not unseen(MONTH):
            return "month_of_year"
        return "hour_of_day"
    if kind != "hour_of_day" and unseen(CLIMATOLOGY_COLUMNS[kind]):
        warnings.warn(
            f"{origin}: the training period never covers {len(unseen(CLIMATOLOGY_COLUMNS[kind]))} "
            f"{SEASON_WORDS[kind]} that the validation/test periods contain (a seasonal climatology needs "
            "training data in every season: several years of data); using hour_of_day instead",
            stacklevel=2,
        )
        return "hour_of_day"
    return kind


def climatology_size(kind: str, n_slots: int) -> int:
    return FIXED_SIZES.get(kind, n_slots)


def climatology_table(total: np.ndarray, count: np.ndarray, describe_node=None, channels=(), origin: str = "") -> np.ndarray:
    """[K, N, C] float32 mean per key; a key never observed at a token takes the token's mean over its observed
    keys, a token never observed the channel's mean (and a warning names the tokens, via ``describe_node``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tokens: handled below
        node_mean = np.nanmean(table, axis=0, keepdims=True)
        channel_mean = np.nanmean(table, axis=(0, 1), keepdims=True)
    if describe_node is not None:
        _report_unobserved(np.isnan(node_mean[0]), describe_node, channels, origin)
    table = np.where(np.isfinite(table), table, node_mean)
    table = np.where(np.isfinite(table), table, np.nan_to_num(channel_mean))
    return table.astype(np.float32)


def _report_unobserved(never: np.ndarray, describe_node, channels, origin: str) -> None:
    """Warn about tokens with no observation in the training period (``never`` [N, C]): they stay in the data
    (inputs masked, targets scored only where observed) and their climatology is the channel's mean."""
    for c, channel in enumerate(channels):
        nodes = np.flatnonzero(never[:, c])
        if len(nodes) == 0:
            continue
        shown = ", ".join(describe_node(int(n)) for n in nodes[:5])
        warnings.warn(
            f"{origin}: {len(nodes)} of {never.shape[0]} tokens of {channel} have no observation in the training "
            f"period ({shown}{' ...' if len(nodes) > 5 else ''}); kept: inputs masked, targets scored only where "
            "observed, climatology = the variable's mean. Check dataset.time_start / the split if unexpected",
            stacklevel=3,
        )
