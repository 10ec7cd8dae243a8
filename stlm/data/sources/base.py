"""The data contract every source returns: a regular multivariate series on spatial tokens.

A *source* reads one data set (a file, a store, a generator) and returns a :class:`SpatioTemporalSeries`.
Everything downstream (windows, splits, scalers, the datamodule) only sees this object, so traffic and
climate differ only in their source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd


class DataValidationError(ValueError):
    """A data file or its configuration is unusable; the message names the file, the field and the fix."""


def time_axis_fault(timestamps: pd.DatetimeIndex) -> tuple[str, int] | None:
    """The first fault of a time axis that must increase strictly by a constant step: ``("repeats", i)``,
    ``("backwards", i)`` or ``("irregular", i)`` between steps ``i`` and ``i + 1``; None when it is regular."""
    if len(timestamps) < 2:
        return None
    steps = np.diff(timestamps.asi8)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        return ("repeats" if steps[i] == 0 else "backwards"), i
    if (steps != steps[0]).any():
        return "irregular", int(np.argmax(steps != steps[0]))
    return None


@dataclass
class SpatioTemporalSeries:
    """A regular series of T steps on N spatial tokens with C channels.

    Attributes:
        values: [T, N, C] float32 in original units. Missing entries hold 0 (never NaN or inf).
        mask: [T, N, C] bool, True where the value was observed.
        timestamps: length-T regular ``DatetimeIndex`` (the interval is ``freq``).
        node_ids: N identifiers (strings), aligned with axis 1 of ``values`` and with ``adjacency``.
        channels: C channel names (e.g. ``["speed"]`` or ``["inflow", "outflow"]``).
        adjacency: [N, N] float32 edge weights (row = from, column = to), or None when no graph is given.
        units: C unit strings ("" when unknown).
        node_coords: [N, 2] float (latitude, longitude) in degrees, or None.
        name: short name of the data set (used for the experiment name).
        origin: where it came from (a path or a generator description), for messages and tags.
    """

    values: np.ndarray
    mask: np.ndarray
    timestamps: pd.DatetimeIndex
    node_ids: list[str]
    channels: list[str]
    adjacency: np.ndarray | None = None
    units: list[str] = field(default_factory=list)
    node_coords: np.ndarray | None = None
    name: str = "series"
    origin: str = ""

    def __post_init__(self) -> None:
        if not self.units:
            self.units = [""] * len(self.channels)
        self.validate()

    @property
    def n_steps(self) -> int:
        return self.values.shape[0]

    @property
    def n_nodes(self) -> int:
        return self.values.shape[1]

    @property
    def n_channels(self) -> int:
        return self.values.shape[2]

    @property
    def freq(self) -> pd.Timedelta:
        return self.timestamps[1] - self.timestamps[0]

    def validate(self) -> None:
        """Check the contract; raise :class:`DataValidationError` naming ``origin`` and the broken field."""
        where = self.origin or self.name
        v, m = self.values, self.mask
        if v.ndim != 3:
            raise DataValidationError(f"{where}: values must be [time, nodes, channels], got shape {v.shape}")
        if m.shape != v.shape or m.dtype != np.bool_:
            raise DataValidationError(f"{where}: mask must be bool with the shape of values {v.shape}, got {m.dtype} {m.shape}")
        if v.dtype != np.float32:
            raise DataValidationError(f"{where}: values must be float32, got {v.dtype}")
        T, N, C = v.shape
        if len(self.timestamps) != T:
            raise DataValidationError(f"{where}: {len(self.timestamps)} timestamps for {T} time steps")
        fault = time_axis_fault(self.timestamps)
        if fault is not None:
            kind, i = fault
            ts = self.timestamps
            if kind == "irregular":
                raise DataValidationError(
                    f"{where}: irregular time step at row {i + 1} ({ts[i]} -> {ts[i + 1]}, expected every "
                    f"{ts[1] - ts[0]}); add the missing rows as empty (missing) values"
                )
            raise DataValidationError(
                f"{where}: {'duplicate' if kind == 'repeats' else 'unsorted'} timestamps at row {i + 1} ({ts[i]} then "
                f"{ts[i + 1]}); timestamps must increase strictly: sort the file and remove duplicate rows"
            )
        if len(self.node_ids) != N or len(set(self.node_ids)) != N:
            raise DataValidationError(f"{where}: need {N} distinct node ids, got {len(self.node_ids)} ({len(set(self.node_ids))} distinct)")
        if len(self.channels) != C or len(self.units) != C:
            raise DataValidationError(f"{where}: need {C} channel names and units, got {self.channels} / {self.units}")
        if not np.isfinite(v).all():
            t, n, c = np.argwhere(~np.isfinite(v))[0]
            raise DataValidationError(
                f"{where}: non-finite value {v[t, n, c]} at time {self.timestamps[t]} (row {t}), node {self.node_ids[n]}, "
                f"channel {self.channels[c]}; sources must move missing values into the mask"
            )
        if self.adjacency is not None and self.adjacency.shape != (N, N):
            raise DataValidationError(f"{where}: adjacency must be [{N}, {N}] to match the nodes, got {self.adjacency.shape}")
        if self.node_coords is not None and self.node_coords.shape != (N, 2):
            raise DataValidationError(f"{where}: node_coords must be [{N}, 2] (lat, lon), got {self.node_coords.shape}")

    def fingerprint(self) -> str:
        """A short content hash (values, mask, time axis, node ids), logged as the run's data fingerprint."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.values).tobytes())
        h.update(np.packbits(self.mask).tobytes())
        h.update(self.timestamps.asi8.tobytes())
        h.update("\x00".join(self.node_ids).encode())
        if self.adjacency is not None:
            h.update(np.ascontiguousarray(self.adjacency, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]


class Source(Protocol):
    """Anything with ``load() -> SpatioTemporalSeries`` (file readers, generators)."""

    def load(self) -> SpatioTemporalSeries: ...
