"""The data contract every source returns: a regular multivariate series on spatial tokens.

A *source* reads one data set (a file, a store, a generator); its ``open()`` returns a :class:`Series`:

    read(start, stop) -> [stop - start, N, C] float32 in original units, NaN = missing
    timestamps (regular: a fixed step, or a whole number of calendar months), channels, units, name, origin
    geometry: a sensor graph or a lat-lon grid (:mod:`stlm.data.sources.geometry`)

Everything downstream (windows, splits, scalers, calendars, the datamodule, forecast and evaluation jobs, the
streamer) only sees this interface, so traffic and climate differ only in their source. Two implementations:
:class:`SpatioTemporalSeries` holds a sensor series in memory (values with 0 where missing, and a mask);
:class:`~stlm.data.sources.climate_grid.ClimateGrid` reads a lat-lon archive lazily, block by block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from stlm.data.sources.geometry import Geometry


class DataValidationError(ValueError):
    """A data file or its configuration is unusable; the message names the file, the field and the fix."""


def months_per_step(timestamps: pd.DatetimeIndex) -> int | None:
    """k when the axis advances by k calendar months at every step (the same day of the month and time of day,
    or the last day of every month); None otherwise (including fixed-length steps)."""
    if len(timestamps) < 2:
        return None
    months = np.asarray(timestamps.year * 12 + timestamps.month, dtype=np.int64)
    k = np.diff(months)
    if k[0] < 1 or (k != k[0]).any():
        return None
    time_of_day = timestamps - timestamps.normalize()
    if (time_of_day != time_of_day[0]).any():
        return None
    if (timestamps.day == timestamps.day[0]).all() or timestamps.is_month_end.all():
        return int(k[0])
    return None


def time_step(timestamps: pd.DatetimeIndex) -> pd.Timedelta | pd.DateOffset:
    """The step of a regular axis: a fixed ``Timedelta``, or ``DateOffset(months=k)`` for a monthly axis."""
    k = months_per_step(timestamps)
    if k is None:
        return timestamps[1] - timestamps[0]
    return pd.offsets.MonthEnd(k) if timestamps.is_month_end.all() else pd.DateOffset(months=k)


def time_axis_fault(timestamps: pd.DatetimeIndex) -> tuple[str, int] | None:
    """The first fault of a time axis that must increase strictly by a constant step (a fixed length, or a
    whole number of calendar months: :func:`months_per_step`): ``("repeats", i)``, ``("backwards", i)`` or
    ``("irregular", i)`` between steps ``i`` and ``i + 1``; None when it is regular."""
    if len(timestamps) < 2:
        return None
    steps = np.diff(timestamps.asi8)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        return ("repeats" if steps[i] == 0 else "backwards"), i
    if (steps != steps[0]).any() and months_per_step(timestamps) is None:
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

    @property
    def geometry(self) -> "Geometry":
        from stlm.data.sources.geometry import Geometry

        return Geometry.graph(self.node_ids, self.node_coords, self.adjacency)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Steps ``start .. stop-1``: [stop - start, N, C] float32, NaN where missing (the :class:`Series` view)."""
        return np.where(self.mask[start:stop], self.values[start:stop], np.float32(np.nan))

    def select_nodes(self, keep: np.ndarray) -> "SpatioTemporalSeries":
        """The series of nodes ``keep`` (sorted indices) only, graph and coordinates cut alike."""
        geometry = self.geometry.select(keep, self.origin or self.name)
        return SpatioTemporalSeries(
            values=np.ascontiguousarray(self.values[:, keep]),
            mask=np.ascontiguousarray(self.mask[:, keep]),
            timestamps=self.timestamps,
            node_ids=list(geometry.node_ids),
            channels=self.channels,
            units=self.units,
            adjacency=geometry.adjacency,
            node_coords=geometry.node_coords,
            name=self.name,
            origin=self.origin,
        )

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


class Series(Protocol):
    """What every consumer reads (module docstring): a regular series of T steps on N tokens with C channels."""

    timestamps: pd.DatetimeIndex
    channels: list[str]
    units: list[str]
    name: str
    origin: str

    @property
    def n_steps(self) -> int: ...

    @property
    def n_nodes(self) -> int: ...

    @property
    def n_channels(self) -> int: ...

    @property
    def freq(self) -> pd.Timedelta: ...

    @property
    def geometry(self) -> "Geometry": ...

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def select_nodes(self, keep: np.ndarray) -> "Series": ...

    def fingerprint(self) -> str: ...


class Source(Protocol):
    """Anything with ``open() -> Series`` (file readers, generators, lazy archives)."""

    def open(self) -> Series: ...


class InMemorySource:
    """Mixin of the sensor readers: ``open()`` is ``load()``, which reads the whole series into memory."""

    def open(self) -> SpatioTemporalSeries:
        return self.load()
