"""The init times of a forecast job and the input windows behind them.

An init time (CF ``forecast_reference_time``) is the time of the last observed input step. A window starting
at step ``s`` has inputs ``s .. s + window - 1``, so its init time is step ``s + window - 1`` and lead ``h``
(1-based) is valid at step ``s + window - 1 + h``.

Forecasts may reach past the end of the data (the point of forecasting): the datamodule pads the series with
``horizon`` missing steps whose calendar continues the regular time axis
(:meth:`stlm.data.datamodule.SpatioTemporalDataModule.windows`), so the model sees the future calendar it was
trained with, and the targets there are simply unobserved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stlm.data.splits import SPLITS

INIT_SPLITS = (*SPLITS, "all")


@dataclass(frozen=True)
class InitTimes:
    """Sample starts (steps) and their init times, in time order."""

    starts: np.ndarray  # [K] int64 first input step of each window
    times: pd.DatetimeIndex  # [K] init times (last input step)


def select_init_times(datamodule, timestamps: pd.DatetimeIndex, window: int, split: str | None, start=None, end=None,
                      every: int = 1) -> InitTimes:
    """Init times of ``split``'s windows (``all``: every window whose inputs lie in the data), within
    ``[start, end]`` when given, every ``every``-th one."""
    if split is not None and split not in INIT_SPLITS:
        raise ValueError(f"init_times.split={split!r}; choose one of {list(INIT_SPLITS)} (or null with start/end)")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"init_times.every must be a positive integer, got {every!r}")
    if split in SPLITS:
        starts = np.asarray(datamodule.datasets[split].starts, dtype=np.int64)
    else:
        starts = np.arange(0, len(timestamps) - window + 1, dtype=np.int64)
    times = timestamps[starts + window - 1]
    keep = np.ones(len(starts), dtype=bool)
    for bound, side in ((start, "start"), (end, "end")):
        if bound is None:
            continue
        try:
            value = pd.Timestamp(str(bound))
        except ValueError as err:
            raise ValueError(f"init_times.{side}={bound!r} is not a time (use e.g. 2019-03-25T00:00)") from err
        keep &= (times >= value) if side == "start" else (times <= value)
    starts, times = starts[keep][::every], times[keep][::every]
    if len(starts) == 0:
        raise ValueError(
            f"no init time selected: split={split}, start={start}, end={end}; the data's init times run from "
            f"{timestamps[window - 1]} to {timestamps[-1]}"
        )
    return InitTimes(starts=starts, times=pd.DatetimeIndex(times))
