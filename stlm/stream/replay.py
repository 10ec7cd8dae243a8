"""Replay a data set in time order through a :class:`Streamer`, writing forecasts in resumable chunks.

Forecasts go to ``<output>/forecasts/chunk_<first step>.npz`` (``issued_at`` [k] int64 ns, ``values``
[k, H, N, C] original units, or [k, H, N, C, Q] for a quantile model, whose levels are in ``quantile`` [Q]). After each chunk the streamer's state is saved; both writes are atomic, chunk
first, so a process killed at any moment resumes from its state file and rewrites at most the chunk it was
writing, with the same values. :func:`read_forecasts` gathers the chunks.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stlm.data.sources.base import Series
from stlm.io.atomic import atomic_write_bytes
from stlm.stream.streamer import Streamer

log = logging.getLogger("stlm.stream")


def resolve_start(start, series: Series, periods: dict[str, tuple[int, int]]) -> int:
    """Step index of ``start``: a split name (its first step), a step index, or a timestamp in the series."""
    if isinstance(start, str) and start in periods:
        return periods[start][0]
    if isinstance(start, int) or (isinstance(start, str) and start.lstrip("-").isdigit()):
        index = int(start)
    else:
        try:
            index = int(series.timestamps.get_loc(pd.Timestamp(start)))
        except (KeyError, ValueError) as err:
            raise ValueError(
                f"start={start!r}: not a split name ({', '.join(periods)}), a step index or a timestamp of the series "
                f"({series.timestamps[0]} .. {series.timestamps[-1]})"
            ) from err
    if not 0 <= index < series.n_steps:
        raise ValueError(f"start={start!r} is outside the series' {series.n_steps} steps")
    return index


def replay(
    streamer: Streamer,
    series: Series,
    start: int,
    steps: int | None,
    output: Path,
    state_path: Path,
    save_every: int = 12,
    warmup: int = 0,
    pace_s: float = 0.0,
) -> int:
    """Stream steps ``start .. start+steps-1`` (resuming after the state's last observation); returns the
    number of forecasts written in this call."""
    columns = series.geometry.index_of(streamer.spec.node_ids, series.origin or series.name)
    stop = series.n_steps if steps is None else min(series.n_steps, start + steps)
    if streamer.last_time is not None:  # resume right after the saved state
        first = int(series.timestamps.get_loc(streamer.last_time)) + 1
        log.info("resuming after %s (step %d)", streamer.last_time, first - 1)
    else:
        first = max(start - warmup, 0)
    chunk_times, chunk_values, written = [], [], 0
    for t in range(first, stop):
        forecast = streamer.push(series.read(t, t + 1)[0][columns], series.timestamps[t])  # [N, C], NaN = missing
        if t < start:
            continue  # warm-up: history for the state, no forecast written
        chunk_times.append(forecast.issued_at.value)
        chunk_values.append(forecast.values)
        if len(chunk_times) == save_every or t == stop - 1:
            _write_chunk(output, chunk_times, chunk_values, streamer.levels, streamer.members)
            written += len(chunk_times)
            chunk_times, chunk_values = [], []
            streamer.save(state_path)
        if pace_s:
            time.sleep(pace_s)
    if first < start and start >= stop:
        streamer.save(state_path)
    return written


def _write_chunk(output: Path, times: list[int], values: list[np.ndarray], levels: np.ndarray | None = None,
                 members: int | None = None) -> None:
    first = pd.Timestamp(times[0]).strftime("%Y%m%dT%H%M%S")
    buffer = io.BytesIO()
    extra = {} if levels is None else {"quantile": np.asarray(levels, dtype=np.float64)}
    if members is not None:
        extra["member"] = np.arange(members, dtype=np.int32)
    np.savez(buffer, issued_at=np.asarray(times, dtype=np.int64), values=np.stack(values).astype(np.float32), **extra)
    atomic_write_bytes(Path(output) / "forecasts" / f"chunk_{first}.npz", buffer.getvalue())


def read_forecasts(output: str | Path) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """All forecasts of a replay, in time order: (issued_at [S], values [S, H, N, C] or [S, H, N, C, Q])."""
    chunks = sorted((Path(output) / "forecasts").glob("chunk_*.npz"))
    if not chunks:
        raise FileNotFoundError(f"no forecast chunks under {Path(output) / 'forecasts'}")
    times, values = [], []
    for path in chunks:
        with np.load(path) as data:
            times.append(data["issued_at"])
            values.append(data["values"])
    return pd.DatetimeIndex(np.concatenate(times)), np.concatenate(values)
