"""Wide CSV series: a timestamp column, then one column per sensor (the header row holds the sensor ids).

    time,773869,767541,...
    2012-03-01 00:00,64.4,67.6,...
    2012-03-01 00:05,,68.0,...        <- empty cell = missing

Rows must be regular in time (every ``interval``), sorted, without duplicates; the error says which row breaks it.

Missing values (the policy of every stlm reader):
  * empty cells and NA markers (``NA``, ``NaN``, ``null``...) are missing: masked. This is the format's own
    declaration, so it always holds.
  * ``missing_value`` (a number) additionally masks cells equal to it, and declares +-inf as missing too.
  * without ``missing_value``, ``inf``/``-inf`` cells are refused with the file, the column, the row and its timestamp.
Text that is not a number (``"n/a?"``, ``"12,5"``) is refused the same way, never silently masked.
"""

from __future__ import annotations

import csv as _csv
from os import PathLike

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


class CsvTrafficSource(InMemorySource):
    """Reader for a wide CSV.

    Args:
        path: the CSV file; relative paths resolve against the current directory.
        timestamp_column: name of the timestamp column (default: the first column).
        channel: name of the single channel.
        unit: its unit.
        adjacency: optional graph file (DCRNN pickle, distance CSV or square CSV), aligned by column id.
        missing_value: a number that also marks missing cells (e.g. 0 for METR-LA exports); None for none.
        drop_unmatched: keep only sensors present in both the file and the graph (otherwise a mismatch raises).
        name: data set name (default: the file's stem).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        timestamp_column: str | None = None,
        channel: str = "value",
        unit: str = "",
        adjacency: str | PathLike[str] | None = None,
        missing_value: float | None = None,
        drop_unmatched: bool = False,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.timestamp_column = timestamp_column
        self.channel = channel
        self.unit = unit
        self.adjacency = adjacency
        self.missing_value = as_missing_value(missing_value)
        self.drop_unmatched = drop_unmatched
        self.name = name

    def load(self) -> SpatioTemporalSeries:
        """Read the file: values [T, N, 1] float32, mask [T, N, 1] (False at empty cells), ids = header names."""
        resolved = resolve_input(self.path, "dataset.path")
        where = str(self.path)
        kind = sniff_format(resolved)
        if kind != "text":
            raise DataValidationError(f"{where}: not a CSV text file: this is {FORMAT_HINTS[kind]}")
        with resolved.open(newline="", encoding="utf-8", errors="replace") as f:
            header = next(_csv.reader(f), [])
        header = [h.strip() for h in header]
        if dup := duplicates(header):
            raise DataValidationError(f"{where}: duplicate column names in the header: {preview(dup)}; each sensor needs its own column")
        try:
            frame = pd.read_csv(resolved, low_memory=False)
        except pd.errors.EmptyDataError:
            raise DataValidationError(f"{where}: the file holds no CSV rows (only blank lines)") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise DataValidationError(f"{where}: not a readable CSV (ragged rows, truncated or not text?): {e}") from e
        frame.columns = [str(c).strip() for c in frame.columns]
        time_col = self.timestamp_column if self.timestamp_column is not None else frame.columns[0]
        if time_col not in frame.columns:
            raise DataValidationError(
                f"{where}: no column {time_col!r} (dataset.timestamp_column); columns present: {preview(list(frame.columns))}"
            )
        sensors = [c for c in frame.columns if c != time_col]
        if not sensors:
            raise DataValidationError(f"{where}: zero sensors: only the timestamp column {time_col!r}; add one column per sensor")
        if len(frame) == 0:
            raise DataValidationError(f"{where}: no data rows below the header")
        timestamps = _parse_timestamps(frame[time_col], where, time_col)
        raw = np.stack([_parse_numbers(frame[c], where, c, timestamps) for c in sensors], axis=1)[:, :, None]
        ids = [normalise_id(c) for c in sensors]

        def locate(t: int, n: int, c: int) -> str:
            return f"column {sensors[n]!r}, row {t} (timestamp {timestamps[t]})"

        values, mask = mask_missing(
            raw, missing_value=self.missing_value, nan_is_missing=True, where=where, locate=locate,
            fix="Empty cells are read as missing; if inf also marks missing readings, set dataset.missing_value "
            "(e.g. .nan); otherwise repair the file.",
        )
        adjacency = None
        if self.adjacency is not None:
            keep, adjacency = graph_for_series(self.adjacency, ids, drop_unmatched=self.drop_unmatched, origin=where)
            values, mask, ids = values[:, keep], mask[:, keep], [ids[k] for k in keep]
        return SpatioTemporalSeries(
            values=values, mask=mask, timestamps=timestamps, node_ids=ids, channels=[self.channel],
            adjacency=adjacency, units=[self.unit], name=self.name or resolved.stem, origin=str(resolved),
        )


def _parse_timestamps(column: pd.Series, where: str, name: str) -> pd.DatetimeIndex:
    if pd.api.types.is_numeric_dtype(column):
        raise DataValidationError(
            f"{where}: the timestamp column {name!r} holds numbers (e.g. {column.iloc[0]!r}); write date-times such "
            "as 2018-01-01 00:05, or set dataset.timestamp_column to the right column"
        )
    parsed = pd.to_datetime(column, errors="coerce")
    if (bad := parsed.isna().to_numpy()).any():
        k = int(np.argmax(bad))
        cell = column.iloc[k]
        shown = "an empty cell" if pd.isna(cell) else repr(cell)
        raise DataValidationError(
            f"{where}: cannot read the timestamp in row {k} of column {name!r}: {shown} (the first row reads as "
            f"{column.iloc[0]!r}); every row needs a date-time, all in one format"
        )
    return to_ns(pd.DatetimeIndex(parsed))


def _parse_numbers(column: pd.Series, where: str, name: str, timestamps: pd.DatetimeIndex) -> np.ndarray:
    """[T] float64 with NaN at empty/NA cells; text that is not a number is an error."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(column, errors="coerce")
    if (bad := (numbers.isna() & column.notna()).to_numpy()).any():
        k = int(np.argmax(bad))
        raise DataValidationError(
            f"{where}: column {name!r}, row {k} (timestamp {timestamps[k]}) holds {column.iloc[k]!r}, not a number; "
            "leave missing readings empty and use '.' as the decimal point"
        )
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
