"""Data sources: readers that return a :class:`SpatioTemporalSeries` (values [T, N, C], mask, timestamps, ids, graph).

Traffic readers (Hydra instantiates them; every argument is typed and explicit):

* :class:`H5TrafficSource`  - METR-LA / PEMS-BAY pandas HDF (key ``df``, one column per sensor id, 0 = missing).
* :class:`NpzTrafficSource` - PEMS ``.npz`` (key ``data``, (T, N, C)); time axis and ids from config.
* :class:`CsvTrafficSource` - wide CSV (a timestamp column, one column per sensor; empty cell = missing).
* :class:`SyntheticTrafficSource` - the embedded default: a seeded synthetic road network (no download).

Graphs: :func:`load_adjacency` (DCRNN pickle, distance CSV -> Gaussian kernel, square CSV) and
:func:`align_series_to_graph` (match by id; a mismatch names the differing ids). Every unusable input raises
:class:`DataValidationError` naming the file and the fix; a missing file raises :class:`DataFileNotFoundError`
(also a ``FileNotFoundError``).
"""

from stlm.data.sources._files import DataFileNotFoundError
from stlm.data.sources.adjacency import Graph, align_series_to_graph, load_adjacency
from stlm.data.sources.base import DataValidationError, Source, SpatioTemporalSeries
from stlm.data.sources.csv import CsvTrafficSource
from stlm.data.sources.h5 import H5TrafficSource
from stlm.data.sources.npz import NpzTrafficSource
from stlm.data.sources.synthetic import SyntheticTrafficSource

__all__ = [
    "CsvTrafficSource",
    "DataFileNotFoundError",
    "DataValidationError",
    "Graph",
    "H5TrafficSource",
    "NpzTrafficSource",
    "Source",
    "SpatioTemporalSeries",
    "SyntheticTrafficSource",
    "align_series_to_graph",
    "load_adjacency",
]
