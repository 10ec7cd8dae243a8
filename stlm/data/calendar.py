"""The calendar of every step (one for sensors and grids), and which of its features the training period covers.

``calendar_index`` gives [T, 4] int64 columns (the ``x_time`` / ``y_time`` of every batch):

    0  time-of-day slot in [0, steps_per_day)      (288 slots at 5 minutes, 24 at 1 hour, 1 for daily data)
    1  day of week in [0, 7), Monday = 0
    2  day of year - 1 in [0, 366)
    3  month - 1 in [0, 12)

Models embed the first two (:mod:`stlm.nn.embeddings`); seasonal tables (historical average, climatology,
:mod:`stlm.data.seasonal`) are keyed by a column or a pair of them. A feature whose values the validation or
test period holds but the training period never covers would be untrained noise: :func:`check_coverage` warns
and reports it, and the datamodule turns it off (a training span shorter than a week loses the day of week).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from stlm.data.sources.base import time_step

SLOT, DAY_OF_WEEK, DAY_OF_YEAR, MONTH = range(4)
N_COLUMNS = 4
DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def steps_per_day(freq: pd.Timedelta) -> int:
    """Number of time-of-day slots for a series with step ``freq`` (at least 1)."""
    return max(1, int(round(pd.Timedelta(days=1) / freq)))


def calendar_index(timestamps: pd.DatetimeIndex, n_slots: int) -> np.ndarray:
    """[T, 4] int64: (time-of-day slot, day of week, day of year - 1, month - 1) of every timestamp."""
    seconds = np.asarray(timestamps.hour * 3600 + timestamps.minute * 60 + timestamps.second, dtype=np.int64)
    slot = np.minimum(seconds * n_slots // 86400, n_slots - 1)
    day = np.asarray(timestamps.day_of_week, dtype=np.int64)
    day_of_year = np.asarray(timestamps.day_of_year, dtype=np.int64) - 1
    month = np.asarray(timestamps.month, dtype=np.int64) - 1
    return np.stack([slot, day, day_of_year, month], axis=1)


def extended_timestamps(timestamps: pd.DatetimeIndex, extra: int) -> pd.DatetimeIndex:
    """``timestamps`` continued by ``extra`` regular steps (fixed steps, or calendar months)."""
    step = time_step(timestamps)
    return timestamps.append(pd.DatetimeIndex([timestamps[-1] + step * (k + 1) for k in range(extra)]))


def check_coverage(calendar: np.ndarray, periods: dict[str, tuple[int, int]], origin: str,
                   day_of_week: bool = True) -> dict[str, bool]:
    """Which embedded calendar features the training period covers for every value used later.

    Returns ``{"time_of_day": bool, "day_of_week": bool}``; warns for each feature that is not covered
    (the day of week only when it is used: ``day_of_week``).
    """
    a, b = periods["train"]
    seen_slots, seen_days = set(calendar[a:b, SLOT].tolist()), set(calendar[a:b, DAY_OF_WEEK].tolist())
    later = calendar[b:]
    missing_slots = sorted(set(later[:, SLOT].tolist()) - seen_slots)
    missing_days = sorted(set(later[:, DAY_OF_WEEK].tolist()) - seen_days) if day_of_week else []
    if missing_days:
        warnings.warn(
            f"{origin}: the training period never covers {', '.join(DAY_NAMES[d] for d in missing_days)}, which the "
            "validation/test periods contain; the day-of-week feature is turned off for this run "
            "(use a training period of at least one week to keep it)",
            stacklevel=2,
        )
    if missing_slots:
        warnings.warn(
            f"{origin}: {len(missing_slots)} time-of-day slots of the validation/test periods never occur in "
            "training; the time-of-day feature is turned off for this run",
            stacklevel=2,
        )
    return {"time_of_day": not missing_slots, "day_of_week": day_of_week and not missing_days}


def future_calendar(now: "torch.Tensor", steps: int, n_slots: int) -> "torch.Tensor":
    """Calendar of the ``steps`` steps after ``now`` for sub-daily steps: now [B, K] -> [B, steps, K].

    Slots wrap at midnight into the next day of the week (and the next day of the year, wrapping after day 365;
    the month is held: callers that know the timestamps pass their exact calendar instead)."""
    import torch

    ahead = torch.arange(1, steps + 1, device=now.device)
    total = now[:, None, SLOT] + ahead  # [B, steps]
    days = total // n_slots
    columns = [total % n_slots, (now[:, None, DAY_OF_WEEK] + days) % 7]
    if now.shape[-1] > DAY_OF_YEAR:
        columns.append((now[:, None, DAY_OF_YEAR] + days) % 366)
    if now.shape[-1] > MONTH:
        columns.append(now[:, None, MONTH].expand_as(total))
    return torch.stack(columns, dim=-1)
