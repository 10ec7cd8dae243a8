"""Calendar features: time-of-day slot and day of week of every step, and their coverage by the training period.

Features are integer indices (the model embeds them): ``slot`` in [0, steps_per_day) and ``day`` in [0, 7)
(Monday = 0). If the validation or test period holds days of the week that the training period never covers
(a training span shorter than a week), their embeddings would be untrained noise: :func:`check_coverage`
detects it, warns, and the datamodule turns the day-of-week feature off (``days_per_week = 0``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def steps_per_day(freq: pd.Timedelta) -> int:
    """Number of time-of-day slots for a series with step ``freq`` (at least 1)."""
    return max(1, int(round(pd.Timedelta(days=1) / freq)))


def calendar_index(timestamps: pd.DatetimeIndex, n_slots: int) -> np.ndarray:
    """[T, 2] int64: (time-of-day slot, day of week) of every timestamp."""
    seconds = np.asarray(timestamps.hour * 3600 + timestamps.minute * 60 + timestamps.second, dtype=np.int64)
    slot = np.minimum(seconds * n_slots // 86400, n_slots - 1)
    day = np.asarray(timestamps.day_of_week, dtype=np.int64)
    return np.stack([slot, day], axis=1)


def check_coverage(calendar: np.ndarray, periods: dict[str, tuple[int, int]], origin: str) -> dict[str, bool]:
    """Which calendar features the training period covers for every value used later.

    Returns ``{"time_of_day": bool, "day_of_week": bool}``; warns for each feature that is not covered.
    """
    a, b = periods["train"]
    seen_slots, seen_days = set(calendar[a:b, 0].tolist()), set(calendar[a:b, 1].tolist())
    later = calendar[b:]
    missing_slots = sorted(set(later[:, 0].tolist()) - seen_slots)
    missing_days = sorted(set(later[:, 1].tolist()) - seen_days)
    names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    if missing_days:
        warnings.warn(
            f"{origin}: the training period never covers {', '.join(names[d] for d in missing_days)}, which the "
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
    return {"time_of_day": not missing_slots, "day_of_week": not missing_days}


def future_calendar(now: "torch.Tensor", steps: int, n_slots: int) -> "torch.Tensor":
    """Calendar indices of the ``steps`` steps after ``now``: now [B, 2] (slot, day) -> [B, steps, 2].

    Slots wrap at midnight into the next day of the week (the day index wraps after Sunday)."""
    import torch

    ahead = torch.arange(1, steps + 1, device=now.device)
    total = now[:, None, 0] + ahead  # [B, steps]
    return torch.stack([total % n_slots, (now[:, None, 1] + total // n_slots) % 7], dim=-1)
