"""Sensor graphs: read an adjacency file and align it with a series' nodes **by id**.

Readers, chosen by content (not only by extension):

* DCRNN pickle ``(sensor_ids, sensor_id_to_ind, adj_mx)`` (METR-LA ``adj_mx.pkl``, PEMS-BAY ``adj_mx_bay.pkl``),
  read with the restricted unpickler (:mod:`stlm.io.safe_pickle`): a pickle cannot run code here.
* distance CSV ``from,to,cost`` (header optional, e.g. PEMS-BAY ``distances_bay_2017.csv`` has none) turned into
  DCRNN's Gaussian kernel ``w_ij = exp(-(d_ij / sigma)^2)``, ``sigma`` = std of the finite distances among the
  requested ids, weights below ``distance_threshold`` set to 0, diagonal 1. Edges are directed (row = from).
* square CSV: a header row of ids plus an index column (Hangzhou ``graph.csv``, ``pandas.DataFrame.to_csv``), or a
  headerless N x N block of numbers (ids ``"0".."N-1"``). A headerless 3 x 3 file is read as a square matrix.

Ids are strings everywhere ('773869', not 773869): CSV headers and integer ids are normalised.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stlm.data.sources._files import (
    FORMAT_HINTS,
    duplicates,
    normalise_id,
    numeric_sort_key,
    preview,
    resolve_input,
    sniff_format,
)
from stlm.data.sources.base import DataValidationError
from stlm.io.safe_pickle import UnsafePickleError, safe_load

log = logging.getLogger(__name__)

_FROM_NAMES = {"from", "source", "src", "i", "from_id", "sensor_from"}
_TO_NAMES = {"to", "target", "dst", "j", "to_id", "sensor_to"}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".pk"}


@dataclass
class Graph:
    """A weighted graph on named nodes.

    Attributes:
        node_ids: N distinct string ids, in the order of the matrix rows and columns.
        weights: [N, N] float32, ``weights[i, j]`` = weight of the edge i -> j (0 = no edge).
        origin: the file it came from (for messages).
    """

    node_ids: list[str]
    weights: np.ndarray
    origin: str = field(default="")

    def __post_init__(self) -> None:
        where = self.origin or "graph"
        self.node_ids = [normalise_id(i) for i in self.node_ids]
        self.weights = np.asarray(self.weights, dtype=np.float32)
        n = len(self.node_ids)
        if self.weights.shape != (n, n):
            raise DataValidationError(f"{where}: weights must be [{n}, {n}] for {n} node ids, got {self.weights.shape}")
        if dup := duplicates(self.node_ids):
            raise DataValidationError(f"{where}: duplicate node ids {preview(dup)}; every node needs its own id")
        if not np.isfinite(self.weights).all():
            i, j = np.argwhere(~np.isfinite(self.weights))[0]
            raise DataValidationError(
                f"{where}: non-finite weight {self.weights[i, j]} on edge {self.node_ids[i]} -> {self.node_ids[j]}"
            )

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    def subset(self, node_ids: list[str]) -> Graph:
        """The graph restricted to ``node_ids``, in that order; every id must be in the graph."""
        pos = {n: i for i, n in enumerate(self.node_ids)}
        wanted = [normalise_id(i) for i in node_ids]
        if missing := [i for i in wanted if i not in pos]:
            raise DataValidationError(
                f"{self.origin or 'graph'}: {len(missing)} requested node ids are not in the graph: {preview(missing)} "
                f"(the graph has {self.n_nodes} ids, e.g. {preview(self.node_ids, 5)})"
            )
        rows = [pos[i] for i in wanted]
        return Graph(wanted, self.weights[np.ix_(rows, rows)], origin=self.origin)


def adjacency_format(path: Path) -> str:
    """``"pickle"``, ``"distance_csv"`` or ``"square_csv"`` for an existing file (raises for anything else)."""
    if _pickle_or_csv(path) == "pickle":
        return "pickle"
    return _csv_layout(_read_csv_cells(path), path)[0]


def _pickle_or_csv(path: Path) -> str:
    kind = sniff_format(path)
    # Protocol-0 pickles are text: trust a .pkl suffix whatever the first bytes look like.
    if kind == "pickle" or path.suffix.lower() in _PICKLE_SUFFIXES:
        return "pickle"
    if kind != "text":
        raise DataValidationError(
            f"{path}: an adjacency file must be a DCRNN pickle or a CSV (from,to,cost rows or a square matrix), "
            f"but this is {FORMAT_HINTS[kind]}"
        )
    return "csv"


def load_adjacency(
    path: str | PathLike[str],
    node_ids: list[Any] | None = None,
    distance_sigma: float | None = None,
    distance_threshold: float = 0.1,
) -> Graph:
    """Read a graph file (format detected from its content, see the module docstring).

    Args:
        path: the file; relative paths resolve against the current directory.
        node_ids: for a distance CSV, the nodes of the matrix in order (default: the sorted union of the file's
            ids); ids without any distance row become isolated nodes (a warning lists them). For a pickle or
            square CSV, the graph is restricted to these ids in this order (all must be present).
        distance_sigma: kernel width for a distance CSV (default: std of the finite distances, as DCRNN).
        distance_threshold: distance-CSV weights below it become 0 (DCRNN's ``normalized_k``).

    Returns:
        :class:`Graph` with [N, N] float32 weights.
    """
    resolved = resolve_input(path, "dataset.adjacency")
    if _pickle_or_csv(resolved) == "pickle":
        graph = _read_dcrnn_pickle(resolved, str(path))
    else:
        cells = _read_csv_cells(resolved)
        kind, has_header = _csv_layout(cells, resolved)
        if kind == "distance_csv":
            rows = cells.iloc[1:] if has_header else cells
            return _gaussian_graph(rows, node_ids, distance_sigma, distance_threshold, str(path))
        graph = _square_graph(cells, has_header, str(path))
    return graph.subset(node_ids) if node_ids is not None else graph


def _read_dcrnn_pickle(path: Path, where: str) -> Graph:
    try:
        obj = safe_load(path, encoding="latin1")
    except UnsafePickleError as e:
        raise DataValidationError(str(e)) from e
    except pickle.UnpicklingError as e:
        raise DataValidationError(f"{e}. Fetch the file again (a DCRNN adjacency pickle is expected).") from e
    expected = "a DCRNN adjacency pickle: the tuple (sensor_ids, sensor_id_to_ind, adj_mx)"
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        got = f"{type(obj).__name__} of length {len(obj)}" if hasattr(obj, "__len__") else type(obj).__name__
        raise DataValidationError(f"{where}: expected {expected}, got a {got}")
    sensor_ids, id_to_ind, adj = obj
    if not isinstance(sensor_ids, (list, tuple)) or not isinstance(id_to_ind, dict) or not isinstance(adj, np.ndarray):
        raise DataValidationError(
            f"{where}: expected {expected} (a list, a dict and a numpy array), got "
            f"({type(sensor_ids).__name__}, {type(id_to_ind).__name__}, {type(adj).__name__})"
        )
    ids = [normalise_id(i) for i in sensor_ids]
    if adj.ndim != 2 or adj.shape != (len(ids), len(ids)):
        raise DataValidationError(f"{where}: adj_mx has shape {adj.shape} but there are {len(ids)} sensor_ids; the file is inconsistent")
    # DCRNN built adj_mx with sensor_id_to_ind; the matrix order must be the sensor_ids order.
    index = {normalise_id(k): v for k, v in id_to_ind.items()}
    if bad := [i for k, i in enumerate(ids) if index.get(i) != k]:
        raise DataValidationError(
            f"{where}: sensor_id_to_ind disagrees with the order of sensor_ids for {preview(bad)}; the file is inconsistent"
        )
    if not np.issubdtype(adj.dtype, np.number):
        raise DataValidationError(f"{where}: adj_mx has dtype {adj.dtype}, expected numbers")
    return Graph(ids, adj.astype(np.float32), origin=where)


def _read_csv_cells(path: Path) -> pd.DataFrame:
    """All cells as stripped strings ("" where empty), no header interpretation."""
    try:
        cells = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path}: the CSV holds no rows (only blank lines); fetch the file again") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataValidationError(f"{path}: not a readable CSV (ragged rows or not text?): {e}") from e
    return cells.fillna("").apply(lambda col: col.str.strip())


def _numbers(cells: pd.DataFrame) -> np.ndarray:
    """Float array of the cells; NaN where a cell is empty or not a number."""
    flat = pd.to_numeric(pd.Series(cells.to_numpy().ravel()), errors="coerce").to_numpy(dtype=np.float64)
    return flat.reshape(cells.shape)


def _csv_layout(cells: pd.DataFrame, path: Path) -> tuple[str, bool]:
    """(``"distance_csv"`` | ``"square_csv"``, whether the first row is a header)."""
    n_rows, n_cols = cells.shape
    first = [c.lower() for c in cells.iloc[0]]
    if n_cols == 3 and first[0] in _FROM_NAMES and first[1] in _TO_NAMES:
        return "distance_csv", True
    num = _numbers(cells)
    if n_rows == n_cols and n_rows >= 2 and np.isnan(num[0, 0]):
        # Header row of ids + index column (first cell empty or a label), listing the same ids.
        header = {normalise_id(c) for c in cells.iloc[0, 1:]}
        if header == {normalise_id(c) for c in cells.iloc[1:, 0]}:
            return "square_csv", True
    if n_rows == n_cols and not np.isnan(num).any():
        return "square_csv", False
    if n_cols == 3:
        return "distance_csv", bool(np.isnan(num[0, 2]))  # a non-numeric cost in row 0 is a header
    raise DataValidationError(
        f"{path}: not a recognised adjacency CSV ({n_rows} rows x {n_cols} columns). Expected from,to,cost rows "
        "(a distance list), or a square matrix: N+1 x N+1 with a header row of ids and an index column, or N x N "
        "numbers without ids"
    )


def _square_graph(cells: pd.DataFrame, has_header: bool, where: str) -> Graph:
    if not has_header:
        weights = _numbers(cells)
        return Graph([str(i) for i in range(len(weights))], weights, origin=where)
    col_ids = [normalise_id(c) for c in cells.iloc[0, 1:]]
    row_ids = [normalise_id(c) for c in cells.iloc[1:, 0]]
    if col_ids != row_ids:
        k = next(i for i, (a, b) in enumerate(zip(col_ids, row_ids)) if a != b)
        raise DataValidationError(
            f"{where}: the header ids and the index column differ (position {k}: column {col_ids[k]!r}, row "
            f"{row_ids[k]!r}); a square adjacency CSV must list the same ids in the same order on both axes"
        )
    weights = _numbers(cells.iloc[1:, 1:])
    if np.isnan(weights).any():
        i, j = np.argwhere(np.isnan(weights))[0]
        raise DataValidationError(
            f"{where}: the weight from {row_ids[i]!r} to {col_ids[j]!r} is {cells.iloc[i + 1, j + 1]!r}, not a "
            "number; write 0 where there is no edge"
        )
    return Graph(col_ids, weights, origin=where)


def _gaussian_graph(
    rows: pd.DataFrame, node_ids: list[Any] | None, sigma: float | None, threshold: float, where: str
) -> Graph:
    """DCRNN's ``get_adjacency_matrix``: Gaussian kernel of road distances, thresholded, directed."""
    src = [normalise_id(i) for i in rows.iloc[:, 0]]
    dst = [normalise_id(i) for i in rows.iloc[:, 1]]
    cost = pd.to_numeric(rows.iloc[:, 2], errors="coerce").to_numpy(dtype=np.float64)
    if (bad := ~np.isfinite(cost) | (cost < 0)).any():
        k = int(np.argmax(bad))
        raise DataValidationError(
            f"{where}: distance row {k} ({src[k]} -> {dst[k]}) has cost {rows.iloc[k, 2]!r}; costs must be finite "
            "numbers >= 0 (columns from,to,cost)"
        )
    file_ids = set(src) | set(dst)
    ids = sorted(file_ids, key=numeric_sort_key) if node_ids is None else [normalise_id(i) for i in node_ids]
    if dup := duplicates(ids):
        raise DataValidationError(f"{where}: duplicate requested node ids {preview(dup)}")
    pos = {n: i for i, n in enumerate(ids)}
    used = [k for k, (a, b) in enumerate(zip(src, dst)) if a in pos and b in pos]
    if not used:
        raise DataValidationError(
            f"{where}: no distance row connects two of the {len(ids)} requested node ids (requested e.g. "
            f"{preview(ids, 5)}; the file has e.g. {preview(sorted(file_ids, key=numeric_sort_key), 5)}). "
            "The ids must be the sensor ids used in the file: set dataset.node_ids"
        )
    if isolated := [n for n in ids if n not in file_ids]:
        log.warning("%s: %d node(s) have no distance row and become isolated nodes: %s", where, len(isolated), preview(isolated))
    n = len(ids)
    dist = np.full((n, n), np.inf)
    for k in used:  # later rows overwrite earlier ones, as in DCRNN
        dist[pos[src[k]], pos[dst[k]]] = cost[k]
    if sigma is None:
        sigma = float(dist[np.isfinite(dist)].std())
    if not np.isfinite(sigma) or sigma <= 0:
        raise DataValidationError(
            f"{where}: the Gaussian kernel width sigma is {sigma} (the std of {len(used)} distances); "
            "give distance_sigma > 0 explicitly"
        )
    weights = np.exp(-np.square(dist / sigma))
    weights[weights < threshold] = 0.0
    np.fill_diagonal(weights, 1.0)
    return Graph(ids, weights, origin=where)


def align_series_to_graph(
    series_ids: list[Any], graph: Graph, drop_unmatched: bool = False, origin: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Match a series' nodes to a graph's nodes by id.

    Args:
        series_ids: the N ids of the series (axis 1 of its values), compared as strings.
        graph: the graph to align.
        drop_unmatched: keep only the ids present on both sides (in series order) and log what was dropped,
            instead of raising.
        origin: the series' file, for messages.

    Returns:
        keep: [K] int64 indices into the series' nodes, in series order (K = N when nothing is dropped).
        weights: [K, K] float32, the graph's weights reordered to ``series_ids[keep]``.

    Raises:
        DataValidationError: the id sets differ (and ``drop_unmatched`` is False), or have nothing in common.
    """
    where = origin or "series"
    sids = [normalise_id(i) for i in series_ids]
    if dup := duplicates(sids):
        raise DataValidationError(f"{where}: duplicate node ids {preview(dup)}; every column needs its own id")
    pos = {n: i for i, n in enumerate(graph.node_ids)}
    in_series = set(sids)
    only_series = [s for s in sids if s not in pos]
    only_graph = [g for g in graph.node_ids if g not in in_series]
    keep = [k for k, s in enumerate(sids) if s in pos]
    if only_series or only_graph:
        summary = (
            f"the series ({len(sids)} nodes) and the graph {graph.origin or ''} ({graph.n_nodes} nodes) have "
            f"different node ids ({len(keep)} in common; ids are compared as strings).\n"
            f"  only in the series ({len(only_series)}): {preview(only_series)}\n"
            f"  only in the graph ({len(only_graph)}): {preview(only_graph)}\n"
        )
        if not keep:
            raise DataValidationError(
                f"{where}: {summary}Nothing matches, so dropping cannot help: the graph belongs to another data set, or "
                "the series has no ids (for an .npz, list the graph ids of its nodes in dataset.node_ids)."
            )
        if not drop_unmatched:
            raise DataValidationError(
                f"{where}: {summary}Fix: make the ids agree (for an .npz, list the graph ids of its nodes in order in "
                "dataset.node_ids), or set dataset.drop_unmatched=true to keep only the common ids."
            )
        log.warning(
            "%s: dataset.drop_unmatched=true: dropped %d series node(s) without a graph row (%s) and %d graph node(s) "
            "without data (%s); edges through dropped graph nodes are lost. %d nodes remain.",
            where, len(only_series), preview(only_series), len(only_graph), preview(only_graph), len(keep),
        )
    rows = [pos[sids[k]] for k in keep]
    return np.asarray(keep, dtype=np.int64), graph.weights[np.ix_(rows, rows)]


def graph_for_series(
    adjacency: str | PathLike[str], series_ids: list[str], *, drop_unmatched: bool, origin: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``adjacency`` and align it to a series: (keep [K] indices into the series, weights [K, K]).

    A distance CSV is evaluated on the series' own ids (DCRNN's convention: distances among your sensors);
    a pickle or square CSV carries its own ids and is aligned by id (:func:`align_series_to_graph`).
    """
    resolved = resolve_input(adjacency, "dataset.adjacency")
    if adjacency_format(resolved) != "distance_csv":
        return align_series_to_graph(series_ids, load_adjacency(adjacency), drop_unmatched=drop_unmatched, origin=origin)
    # A distance file may cover more sensors than the series (they are ignored), but every sensor of the series
    # needs distances: one the file never mentions is a mismatch, like an id missing from a pickle.
    listed = set(load_adjacency(adjacency).node_ids)
    ids = [normalise_id(i) for i in series_ids]
    missing = [i for i in ids if i not in listed]
    if missing and not drop_unmatched:
        raise DataValidationError(
            f"{origin}: {len(missing)} of the series' {len(ids)} node ids have no distance in {adjacency} "
            f"(ids are compared as strings).\n  only in the series ({len(missing)}): {preview(missing)}\n"
            "Fix: use the distance file of these sensors, give dataset.node_ids that match the file's ids, or set "
            "dataset.drop_unmatched=true to keep only the sensors the file covers."
        )
    keep = np.array([k for k, i in enumerate(ids) if i in listed], dtype=np.int64)
    if missing:
        log.warning(
            "%s: dataset.drop_unmatched=true: dropped %d series node(s) without distances in %s: %s",
            origin, len(missing), adjacency, preview(missing),
        )
    graph = load_adjacency(adjacency, node_ids=[ids[k] for k in keep])
    return keep, graph.weights
