"""METR-LA / PEMS-BAY speed files: pandas HDF (``df.to_hdf(path, key="df")``), one column per sensor id.

Layout read: a DataFrame under ``key`` with a DatetimeIndex (regular, e.g. every 5 minutes) and one numeric
column per sensor; values [T, N] become [T, N, 1] with channel ``channel``.

Missing values (the policy of every stlm reader):
  * ``missing_value`` (default 0.0, the METR-LA / PEMS-BAY convention) is masked; a data set that declares a
    missing value also has NaN and +-inf masked.
  * ``missing_value=None`` declares that the file has no missing entries: every value is observed, and a NaN or
    +-inf is refused with the file, the key, the sensor column and the first row (index and timestamp).

Needs ``tables`` (PyTables) for pandas' HDF support: ``pip install tables``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from stlm.data.sources._files import (
    FORMAT_HINTS,
    as_missing_value,
    duplicates,
    mask_missing,
    normalise_id,
    preview,
    resolve_input,
    sniff_format,
    to_ns,
)
from stlm.data.sources.adjacency import graph_for_series
from stlm.data.sources.base import DataValidationError, InMemorySource, SpatioTemporalSeries


class H5TrafficSource(InMemorySource):
    """Reader for a METR-LA-layout ``.h5`` file.

    Args:
        path: the ``.h5`` file (relative paths resolve against the current directory).
        adjacency: optional graph file (DCRNN pickle, distance CSV or square CSV), aligned by sensor id.
        key: the HDF key of the DataFrame.
        missing_value: the value that marks a missing reading (0.0 for METR-LA / PEMS-BAY); None = no missing values.
        channel: name of the single channel.
        unit: its unit.
        drop_unmatched: keep only sensors present in both the file and the graph (otherwise a mismatch raises).
        name: data set name (default: the file's stem).
        locations: optional CSV of sensor coordinates, ``index,sensor_id,latitude,longitude`` with a header
            (METR-LA) or ``sensor_id,latitude,longitude`` without one (PEMS-BAY); aligned by sensor id.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        adjacency: str | PathLike[str] | None = None,
        key: str = "df",
        missing_value: float | None = 0.0,
        channel: str = "speed",
        unit: str = "mph",
        drop_unmatched: bool = False,
        name: str | None = None,
        locations: str | PathLike[str] | None = None,
    ) -> None:
        self.path = path
        self.adjacency = adjacency
        self.key = key
        self.missing_value = as_missing_value(missing_value)
        self.channel = channel
        self.unit = unit
        self.drop_unmatched = drop_unmatched
        self.name = name
        self.locations = locations

    def load(self) -> SpatioTemporalSeries:
        """Read the file: values [T, N, 1] float32, mask [T, N, 1], node ids = the column names as strings."""
        resolved = resolve_input(self.path, "dataset.path")
        where = str(self.path)
        frame = self._read_frame(resolved, where)
        ids = [normalise_id(c) for c in frame.columns]
        if dup := duplicates(ids):
            raise DataValidationError(f"{where}: duplicate sensor columns {preview(dup)} under key '{self.key}'")
        if bad := [c for c, dtype in frame.dtypes.items() if not _is_real_number(dtype)]:
            raise DataValidationError(
                f"{where}: sensor column(s) {preview([str(c) for c in bad])} under key '{self.key}' are not numeric "
                f"(dtype {frame.dtypes[bad[0]]}); every column must hold the readings of one sensor"
            )
        timestamps = to_ns(frame.index)
        raw = frame.to_numpy(dtype=np.float64, na_value=np.nan)[:, :, None]  # nullable dtypes: pd.NA -> NaN

        def locate(t: int, n: int, c: int) -> str:
            return f"key '{self.key}', sensor column {ids[n]!r}, row {t} (timestamp {timestamps[t]})"

        values, mask = mask_missing(
            raw, missing_value=self.missing_value, nan_is_missing=False, where=where, locate=locate,
            fix="If NaN/inf mark missing readings, declare it with dataset.missing_value (e.g. 0.0, or .nan to mask "
            "only NaN/inf); otherwise repair the file.",
        )
        adjacency = None
        if self.adjacency is not None:
            keep, adjacency = graph_for_series(self.adjacency, ids, drop_unmatched=self.drop_unmatched, origin=where)
            values, mask, ids = values[:, keep], mask[:, keep], [ids[k] for k in keep]
        coords = _read_locations(self.locations, ids, where) if self.locations is not None else None
        return SpatioTemporalSeries(
            values=values, mask=mask, timestamps=timestamps, node_ids=ids, channels=[self.channel],
            adjacency=adjacency, units=[self.unit], node_coords=coords, name=self.name or resolved.stem,
            origin=str(resolved),
        )

    def _read_frame(self, resolved: Path, where: str) -> pd.DataFrame:
        kind = sniff_format(resolved)
        if kind != "hdf5":
            raise DataValidationError(
                f"{where}: not an HDF5 file: this is {FORMAT_HINTS[kind]}. The h5 reader expects pandas HDF as "
                "written by df.to_hdf(path, key='df') (METR-LA / PEMS-BAY layout)"
            )
        try:
            with pd.HDFStore(resolved, mode="r") as store:
                keys = [k.lstrip("/") for k in store.keys()]
                if self.key.lstrip("/") not in keys:
                    raise DataValidationError(
                        f"{where}: no key '{self.key}' in this HDF file; keys present: {preview(keys) if keys else 'none'}"
                        f"{'' if keys else ' (written with h5py rather than pandas?)'}. "
                        "Set dataset.key to the one holding the DataFrame of sensor columns"
                    )
                frame = store.get(self.key)
        except DataValidationError:
            raise
        except ImportError as e:
            raise ImportError(f"reading {where} needs PyTables for pandas HDF support: pip install tables ({e})") from e
        except Exception as e:  # tables/HDF5 raise RuntimeError, OSError, ValueError... for damaged files
            raise DataValidationError(
                f"{where}: cannot read this HDF file (truncated or corrupt?): {_short(e)}. Fetch or write it again"
            ) from e
        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        if not isinstance(frame, pd.DataFrame):
            raise DataValidationError(f"{where}: key '{self.key}' holds a {type(frame).__name__}, expected a DataFrame")
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise DataValidationError(
                f"{where}: the index under key '{self.key}' holds {frame.index.dtype} values ({type(frame.index).__name__}), "
                "not a DatetimeIndex; the rows must be indexed by their timestamps "
                "(df.index = pd.to_datetime(...); df.to_hdf(path, key='df'))"
            )
        if frame.shape[1] == 0:
            raise DataValidationError(f"{where}: zero sensors: the DataFrame under key '{self.key}' has no columns")
        if frame.shape[0] == 0:
            raise DataValidationError(f"{where}: the DataFrame under key '{self.key}' has no rows")
        return frame


def _is_real_number(dtype: object) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _short(error: Exception) -> str:
    """HDF5 errors carry a long C back trace; keep the line that says what is wrong."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for ln in lines:
        if "truncated" in ln or "signature" in ln:
            return ln
    return (lines[-1] if lines else type(error).__name__)[:300]


def _read_locations(path: str | PathLike[str], node_ids: list[str], where: str) -> np.ndarray:
    """[N, 2] (latitude, longitude) for ``node_ids`` from a sensor-locations CSV."""
    resolved = resolve_input(path, "dataset.locations")
    try:
        table = pd.read_csv(resolved, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataValidationError(f"{path}: not a readable locations CSV: {e}") from e
    first = [c.strip().lower() for c in table.iloc[0]]
    if "latitude" in first and "longitude" in first:
        id_col = first.index("sensor_id") if "sensor_id" in first else 0
        cols = [id_col, first.index("latitude"), first.index("longitude")]
        table = table.iloc[1:, cols]
    elif table.shape[1] in (3, 4):  # headerless: [index,] sensor_id, latitude, longitude
        table = table.iloc[:, -3:]
    else:
        raise DataValidationError(
            f"{path}: expected columns sensor_id,latitude,longitude (optionally an index column first, and a header "
            f"row), got {table.shape[1]} columns"
        )
    ids = [normalise_id(i) for i in table.iloc[:, 0]]
    latlon = table.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    pos = {n: i for i, n in enumerate(ids)}
    if missing := [n for n in node_ids if n not in pos]:
        raise DataValidationError(
            f"{path}: no coordinates for {len(missing)} sensor(s) of {where}: {preview(missing)}; add their rows or "
            "remove dataset.locations"
        )
    coords = latlon[[pos[n] for n in node_ids]]
    if not np.isfinite(coords).all():
        bad = node_ids[int(np.argwhere(~np.isfinite(coords))[0, 0])]
        raise DataValidationError(f"{path}: sensor {bad!r} has a latitude/longitude that is not a number")
    return coords
