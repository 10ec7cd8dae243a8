"""What a model needs to know about the data, passed at the call site when the model is built."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DataSpec:
    """Sizes and static metadata of a data set (everything a model constructor may need from the data).

    Attributes:
        n_nodes, n_channels: N spatial tokens and C channels of the [B, T, N, C] batches.
        window, horizon: input steps T and forecast steps H.
        steps_per_day: number of time-of-day slots (288 at 5 minutes); 0 if the feature is off.
        days_per_week: 7, or 0 when the day-of-week feature is off (training never covers some weekday).
        interval_minutes: length of one step.
        channels, units: names and units of the C channels.
        node_ids: the N sensor identifiers (empty for grid cells, named by their coordinates).
        adjacency: [N, N] edge weights (row = from, column = to), or None.
        grid_shape: (n_lat, n_lon) when the N tokens are the cells of a lat-lon grid flattened latitude-major
            (token ``n = i * n_lon + j``); None for sensors.
        node_coords: [N, 2] (latitude, longitude) in degrees of every token, or None.
        node_features: [N, S] static per-token features (e.g. sin/cos of latitude and longitude, land-sea mask),
            or None.
        time_features: number of columns of ``x_time``/``y_time`` (4: slot, day of week, day of year, month;
            :mod:`stlm.data.calendar`; checkpoints of earlier versions hold 2 or 3).
    """

    n_nodes: int
    n_channels: int
    window: int
    horizon: int
    steps_per_day: int
    days_per_week: int
    interval_minutes: float
    channels: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    node_ids: tuple[str, ...] = field(default=(), repr=False)
    adjacency: np.ndarray | None = field(default=None, compare=False, repr=False)
    grid_shape: tuple[int, int] | None = None
    node_coords: np.ndarray | None = field(default=None, compare=False, repr=False)
    node_features: np.ndarray | None = field(default=None, compare=False, repr=False)
    time_features: int = 2

    def to_dict(self) -> dict:
        """JSON-friendly form (adjacency left out), stored in checkpoints and run metadata."""
        return {
            "n_nodes": self.n_nodes,
            "n_channels": self.n_channels,
            "window": self.window,
            "horizon": self.horizon,
            "steps_per_day": self.steps_per_day,
            "days_per_week": self.days_per_week,
            "interval_minutes": self.interval_minutes,
            "channels": list(self.channels),
            "units": list(self.units),
            "node_ids": list(self.node_ids),
            "grid_shape": None if self.grid_shape is None else list(self.grid_shape),
            "time_features": self.time_features,
        }
