"""PEMS-style ``.npz`` files: one array ``data`` of shape (T, N, C) (or (T, N) for one channel), no time axis, no ids.

The time axis comes from config (``start``, ``interval``). Node ids come from ``node_ids`` (a list, or a text file
with one id per line); without them the N nodes are called ``"0".."N-1"``, and a graph is matched by position
only when it has exactly N nodes (the PEMS03/04/07/08 convention; the nodes then take the graph's ids, and a
distance CSV is evaluated on the ids "0".."N-1"). When the counts differ the reader refuses:
the file cannot say which graph node each column is (Hangzhou metro: 81 graph nodes, 80 stations with flows).

Missing values (the policy of every stlm reader):
  * ``missing_value`` None (the default): the file declares no missing entries; every value is observed, and a
    NaN or +-inf is refused with the file, the variable and the first index (time, node, channel).
  * ``missing_value`` a number: entries equal to it, NaN and +-inf are masked. ``.nan`` (float NaN) masks
    only NaN/inf, so real zeros (e.g. night-time passenger counts) stay observed.

Arrays holding Python objects are refused (reading them would unpickle); ``.npy`` files (one array) are accepted.
"""

from __future__ import annotations

import logging
import zipfile
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
)
from stlm.data.sources.adjacency import adjacency_format, graph_for_series, load_adjacency
from stlm.data.sources.base import DataValidationError, InMemorySource, SpatioTemporalSeries

log = logging.getLogger(__name__)


class NpzTrafficSource(InMemorySource):
    """Reader for a PEMS-layout ``.npz`` file.

    Args:
        path: the ``.npz`` (or ``.npy``) file; relative paths resolve against the current directory.
        start: timestamp of the first step.
        interval: step between rows, a pandas frequency ("5min", "10min", "1h").
        key: the array inside the archive.
        channels: C channel names (default ``["value"]`` for one channel, else ``channel_0..``).
        units: C units (default "").
        node_ids: N ids in the order of axis 1, as a list or the path of a text file with one id per line.
        adjacency: optional graph file (DCRNN pickle, distance CSV or square CSV).
        missing_value: the value that marks a missing entry, NaN to mask NaN/inf only, None for none.
        drop_unmatched: keep only nodes present in both the file and the graph (otherwise a mismatch raises).
        name: data set name (default: the file's stem).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        start: str = "2018-01-01 00:00",
        interval: str = "5min",
        key: str = "data",
        channels: list[str] | None = None,
        units: list[str] | None = None,
        node_ids: list[str] | str | PathLike[str] | None = None,
        adjacency: str | PathLike[str] | None = None,
        missing_value: float | None = None,
        drop_unmatched: bool = False,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.start = start
        self.interval = interval
        self.key = key
        self.channels = channels
        self.units = units
        self.node_ids = node_ids
        self.adjacency = adjacency
        self.missing_value = as_missing_value(missing_value)
        self.drop_unmatched = drop_unmatched
        self.name = name

    def load(self) -> SpatioTemporalSeries:
        """Read the array: values [T, N, C] float32, mask [T, N, C], timestamps from ``start`` every ``interval``."""
        resolved = resolve_input(self.path, "dataset.path")
        where = str(self.path)
        raw, variable = self._read_array(resolved, where)
        T, N, C = raw.shape
        timestamps = self._timestamps(T, where)
        default_channels = ["value"] if C == 1 else [f"channel_{i}" for i in range(C)]
        channels = list(self.channels) if self.channels is not None else default_channels
        units = list(self.units) if self.units is not None else [""] * C
        for key, names in (("dataset.channels", channels), ("dataset.units", units)):
            if len(names) != C:
                raise DataValidationError(
                    f"{where}: {key} has {len(names)} entries ({names}) but '{variable}' has {C} channels (shape {raw.shape})"
                )
        ids = self._ids(N, where)

        def locate(t: int, n: int, c: int) -> str:
            return f"'{variable}'[{t}, {n}, {c}] (time {timestamps[t]}, node {n}, channel {channels[c]!r})"

        values, mask = mask_missing(
            raw, missing_value=self.missing_value, nan_is_missing=False, where=where, locate=locate,
            fix="If NaN/inf mark missing entries, declare it with dataset.missing_value=.nan (or the file's missing "
            "marker, e.g. 0); otherwise repair the file.",
        )
        adjacency = None
        if self.adjacency is not None:
            ids, keep, adjacency = self._align(ids, N, where)
            values, mask = values[:, keep], mask[:, keep]
        elif ids is None:
            ids = [str(i) for i in range(N)]
        return SpatioTemporalSeries(
            values=values, mask=mask, timestamps=timestamps, node_ids=ids, channels=channels, adjacency=adjacency,
            units=units, name=self.name or resolved.stem, origin=str(resolved),
        )

    def _read_array(self, resolved: Path, where: str) -> tuple[np.ndarray, str]:
        kind = sniff_format(resolved)
        if kind not in ("zip", "npy"):
            raise DataValidationError(
                f"{where}: not an .npz archive: this is {FORMAT_HINTS[kind]}. The npz reader expects "
                f"np.savez(path, {self.key}=array) with array of shape (T, N, C)"
            )
        # We own the file handle: np.load leaks its own when a truncated zip fails to open.
        try:
            with resolved.open("rb") as f:
                if kind == "npy":
                    array, variable = np.load(f, allow_pickle=False), "<.npy array>"
                else:
                    with np.load(f, allow_pickle=False) as archive:
                        if self.key not in archive.files:
                            raise DataValidationError(
                                f"{where}: no array '{self.key}' in this .npz; arrays present: {preview(archive.files)}. "
                                "Set dataset.key to the one holding the (T, N, C) series"
                            )
                        array, variable = archive[self.key], self.key
        except DataValidationError:
            raise
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise DataValidationError(
                    f"{where}: '{self.key}' holds Python objects, which would have to be unpickled; refused for safety. "
                    "Save a numeric array (e.g. array.astype('float32'))"
                ) from e
            raise DataValidationError(f"{where}: cannot read this file (truncated or corrupt?): {e}. Fetch it again") from e
        except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:  # a cut zip, a cut member, a bad header
            raise DataValidationError(f"{where}: cannot read this file (truncated or corrupt?): {e}. Fetch it again") from e
        if array.dtype.kind not in "iuf":
            raise DataValidationError(f"{where}: '{variable}' has dtype {array.dtype}; expected real numbers")
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise DataValidationError(f"{where}: '{variable}' has shape {array.shape}; expected (T, N, C) or (T, N)")
        if array.shape[1] == 0 or array.shape[2] == 0:
            raise DataValidationError(f"{where}: zero sensors/channels: '{variable}' has shape {array.shape}")
        if array.shape[0] == 0:
            raise DataValidationError(f"{where}: '{variable}' has no time steps (shape {array.shape})")
        return array, variable

    def _timestamps(self, n_steps: int, where: str) -> pd.DatetimeIndex:
        try:
            step = pd.Timedelta(pd.tseries.frequencies.to_offset(self.interval))
            start = pd.Timestamp(self.start)
        except (ValueError, TypeError) as e:
            raise DataValidationError(
                f"{where}: cannot build the time axis from dataset.start={self.start!r}, dataset.interval="
                f"{self.interval!r}: {e}. Use e.g. start='2018-01-01 00:00', interval='5min'"
            ) from e
        if step <= pd.Timedelta(0):
            raise DataValidationError(f"{where}: dataset.interval={self.interval!r} must be a positive duration")
        return pd.date_range(start=start, periods=n_steps, freq=step).as_unit("ns")

    def _ids(self, n_nodes: int, where: str) -> list[str] | None:
        """The configured ids (checked against N), or None when the file's nodes have no ids."""
        if self.node_ids is None:
            return None
        if isinstance(self.node_ids, (str, PathLike)):
            ids_path = resolve_input(self.node_ids, "dataset.node_ids")
            lines = ids_path.read_text().splitlines()
            ids = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            source = f"the file {self.node_ids}"
        else:
            ids = [normalise_id(i) for i in self.node_ids]
            source = "dataset.node_ids"
        if len(ids) != n_nodes:
            raise DataValidationError(
                f"{where}: {source} lists {len(ids)} ids but the array has {n_nodes} nodes; give exactly one id per "
                "node, in the order of axis 1"
            )
        if dup := duplicates(ids):
            raise DataValidationError(f"{where}: {source} repeats ids {preview(dup)}")
        return ids

    def _align(self, ids: list[str] | None, n_nodes: int, where: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(node ids, keep [K] indices into the nodes, weights [K, K])."""
        assert self.adjacency is not None
        positional = [str(i) for i in range(n_nodes)]
        if ids is not None:
            keep, weights = graph_for_series(self.adjacency, ids, drop_unmatched=self.drop_unmatched, origin=where)
            return [ids[k] for k in keep], keep, weights
        if adjacency_format(resolve_input(self.adjacency, "dataset.adjacency")) == "distance_csv":
            # PEMS04/08 distance files name the nodes 0..N-1, exactly the positional ids.
            keep, weights = graph_for_series(self.adjacency, positional, drop_unmatched=self.drop_unmatched, origin=where)
            return [positional[k] for k in keep], keep, weights
        graph = load_adjacency(self.adjacency)
        if graph.n_nodes != n_nodes:
            raise DataValidationError(
                f"{where}: the .npz has no node ids, so its {n_nodes} nodes can only be matched to the graph "
                f"{self.adjacency} by position, but the graph has {graph.n_nodes} nodes. Give dataset.node_ids: the "
                f"graph id of each of the {n_nodes} nodes in order (a list, or a text file with one id per line), "
                "plus dataset.drop_unmatched=true if some graph nodes have no data. For Hangzhou metro (graph ids "
                "0..80, no flow column for station 54): the ids 0..80 without 54."
            )
        log.info("%s: no node ids; matched its %d nodes to the graph's nodes by position", where, n_nodes)
        return list(graph.node_ids), np.arange(n_nodes, dtype=np.int64), graph.weights
