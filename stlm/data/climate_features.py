"""Per-token static features and per-step calendar features of a lat-lon grid.

Static (one row per cell, cells flattened latitude-major, ``n = i * n_lon + j``):
``[sin lat, cos lat, sin lon, cos lon]`` and, when the data set has one, the land fraction in [0, 1].
Longitude enters as sin/cos so the date line is no edge; latitude as sin/cos so the poles are.

Calendar [T, 3] int64: ``(time-of-day slot, day of week, day of year - 1)``. The first two columns are the
sensor contract's (``stlm.data.calendar``); grids add the day of year for seasonal climatologies and features.
Grid specs set ``days_per_week = 0``: the weather has no weekly cycle, so no model embeds the weekday.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stlm.data.calendar import calendar_index

STATIC_NAMES = ("sin_lat", "cos_lat", "sin_lon", "cos_lon")


def grid_calendar(timestamps: pd.DatetimeIndex, n_slots: int) -> np.ndarray:
    """[T, 3] int64: (slot in [0, n_slots), day of week in [0, 7), day of year in [0, 366))."""
    day_of_year = np.asarray(timestamps.day_of_year, dtype=np.int64) - 1
    return np.concatenate([calendar_index(timestamps, n_slots), day_of_year[:, None]], axis=1)


def cell_coords(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """[H * W, 2] (latitude, longitude) in degrees of every cell, latitude-major."""
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return np.stack([la.ravel(), lo.ravel()], axis=1)


def static_features(lat: np.ndarray, lon: np.ndarray, land_sea_mask: np.ndarray | None = None) -> np.ndarray:
    """[H * W, S] float32 static features (module docstring); S = 4, or 5 with a land-sea mask [H, W]."""
    coords = np.deg2rad(cell_coords(lat, lon))
    cols = [np.sin(coords[:, 0]), np.cos(coords[:, 0]), np.sin(coords[:, 1]), np.cos(coords[:, 1])]
    if land_sea_mask is not None:
        cols.append(np.clip(land_sea_mask, 0.0, 1.0).ravel())
    return np.stack(cols, axis=1).astype(np.float32)
