"""Where the N spatial tokens of a series lie: a sensor graph or a lat-lon grid, behind one interface.

A series' geometry is the only place that knows which of the two a data set is. Everything downstream asks it:

* ``area_weights()`` [N]: how much each token counts in a spatial mean. Sensors count alike (all 1); grid cells
  count by area, ``cos(lat) / mean cos(lat)`` (mean weight 1, WeatherBench convention).
* ``static_features()`` [N, S] or None: per-token inputs that never change (grids: sin/cos of latitude and
  longitude, and the land fraction when the data set has one; sensors: none).
* ``space_dims`` / ``space_coords()``: the spatial dimensions and CF coordinates of a forecast file
  (``node`` with ``sensor_id``, or ``lat`` and ``lon``).
* ``align(ds, where)``: the token index of each spatial position of a forecast file (by sensor id, or by
  latitude and longitude), with an error naming the file when they do not match.
* ``select(keep)``: the geometry of a subset of tokens (sensors may be dropped; grid cells may not, the grid
  models need the whole H x W layout).

Grid cells are tokens flattened latitude-major: token ``n = i * n_lon + j`` is cell ``(lat[i], lon[j])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stlm.data.sources.base import DataValidationError

STATIC_NAMES = ("sin_lat", "cos_lat", "sin_lon", "cos_lon")


def latitude_weights(lat_deg: np.ndarray) -> np.ndarray:
    """[N] float32 ``cos(lat) / mean(cos(lat))`` for token latitudes in degrees (poles get weight ~0)."""
    w = np.cos(np.deg2rad(np.asarray(lat_deg, dtype=np.float64))).clip(min=0.0)
    return (w / max(w.mean(), 1e-12)).astype(np.float32)


def cell_coords(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """[H * W, 2] (latitude, longitude) in degrees of every cell, latitude-major."""
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return np.stack([la.ravel(), lo.ravel()], axis=1)


def static_features(lat: np.ndarray, lon: np.ndarray, land_sea_mask: np.ndarray | None = None) -> np.ndarray:
    """[H * W, S] float32: sin/cos of latitude and longitude (the date line and the poles are no edge), and the
    land fraction in [0, 1] when a land-sea mask [H, W] is given (S = 4 or 5)."""
    coords = np.deg2rad(cell_coords(lat, lon))
    cols = [np.sin(coords[:, 0]), np.cos(coords[:, 0]), np.sin(coords[:, 1]), np.cos(coords[:, 1])]
    if land_sea_mask is not None:
        cols.append(np.clip(land_sea_mask, 0.0, 1.0).ravel())
    return np.stack(cols, axis=1).astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """The tokens' layout. Build it with :meth:`graph` (sensors) or :meth:`lat_lon` (grids).

    Attributes:
        n_nodes: N tokens.
        node_ids: N sensor identifiers (empty for grids: a cell is named by its coordinates).
        node_coords: [N, 2] (latitude, longitude) in degrees, or None when the sensors' positions are unknown.
        adjacency: [N, N] edge weights (row = from, column = to), or None.
        lat, lon: [H] ascending latitudes and [W] longitudes in [-180, 180) of a grid; None for sensors.
        land_sea_mask: [H, W] land fraction of a grid's cells, or None.
    """

    n_nodes: int
    node_ids: tuple[str, ...] = ()
    node_coords: np.ndarray | None = field(default=None, repr=False)
    adjacency: np.ndarray | None = field(default=None, repr=False)
    lat: np.ndarray | None = field(default=None, repr=False)
    lon: np.ndarray | None = field(default=None, repr=False)
    land_sea_mask: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def graph(cls, node_ids, node_coords: np.ndarray | None = None, adjacency: np.ndarray | None = None) -> "Geometry":
        ids = tuple(str(i) for i in node_ids)
        return cls(len(ids), ids, node_coords, adjacency)

    @classmethod
    def lat_lon(cls, lat: np.ndarray, lon: np.ndarray, land_sea_mask: np.ndarray | None = None) -> "Geometry":
        lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        return cls(len(lat) * len(lon), (), cell_coords(lat, lon), None, lat, lon, land_sea_mask)

    @property
    def grid_shape(self) -> tuple[int, int] | None:
        """(H, W) of a lat-lon grid; None for sensors."""
        return None if self.lat is None else (len(self.lat), len(self.lon))

    @property
    def token_name(self) -> str:
        """What the tokens are called in messages: ``nodes`` or ``cells``."""
        return "nodes" if self.lat is None else "cells"

    def area_weights(self) -> np.ndarray:
        """[N] float32 weight of each token in spatial means (module docstring)."""
        if self.lat is None:
            return np.ones(self.n_nodes, dtype=np.float32)
        return latitude_weights(self.node_coords[:, 0])

    def static_features(self) -> np.ndarray | None:
        """[N, S] float32 static inputs of the tokens, or None (module docstring)."""
        if self.lat is None:
            return None
        return static_features(self.lat, self.lon, self.land_sea_mask)

    @property
    def space_dims(self) -> tuple[str, ...]:
        """The spatial dimensions of a forecast file."""
        return ("node",) if self.lat is None else ("lat", "lon")

    def space_coords(self) -> dict:
        """CF coordinates of the spatial dimensions, as ``{name: (dims, values, attrs)}``."""
        lat_attrs = {"standard_name": "latitude", "units": "degrees_north"}
        lon_attrs = {"standard_name": "longitude", "units": "degrees_east"}
        if self.lat is not None:
            return {"lat": ("lat", self.lat, lat_attrs), "lon": ("lon", self.lon, lon_attrs)}
        coords = {
            "node": ("node", np.arange(self.n_nodes), {"long_name": "index of the sensor"}),
            "sensor_id": ("node", np.asarray(self.node_ids, dtype=str),
                          {"long_name": "sensor identifier", "cf_role": "timeseries_id"}),
        }
        if self.node_coords is not None:
            coords["lat"] = ("node", self.node_coords[:, 0].astype(np.float64), lat_attrs)
            coords["lon"] = ("node", self.node_coords[:, 1].astype(np.float64), lon_attrs)
        return coords

    def align(self, ds, where: str, origin: str = "") -> np.ndarray:
        """Token index of each spatial position of the forecast Dataset ``ds`` (flattened as its dims are), or a
        :class:`DataValidationError` naming ``where`` when its sensors or grid differ from this geometry's."""
        if self.lat is not None:
            if "node" in ds.dims or "lat" not in ds.dims or "lon" not in ds.dims:
                raise DataValidationError(f"{where}: forecasts on dims {list(ds.dims)} do not cover the lat-lon grid of "
                                          f"{origin}; grid forecasts are (init_time, lead_time, lat, lon)")
            for name, ours in (("lat", self.lat), ("lon", self.lon)):
                theirs = ds[name].values
                if len(ours) != len(theirs) or not np.allclose(ours, theirs, atol=1e-6):
                    raise DataValidationError(f"{where}: its {name} ({len(theirs)} values, {theirs[:3]}...) differ from "
                                              f"the truth grid's ({len(ours)} values, {ours[:3]}...) at {origin}")
            return np.arange(self.n_nodes)
        if "node" not in ds.dims:
            raise DataValidationError(f"{where}: forecasts on dims {list(ds.dims)} have no 'node' dimension, but the "
                                      f"truth {origin} is a sensor network")
        ids = [str(i) for i in (ds.sensor_id.values if "sensor_id" in ds.coords else self.node_ids)]
        lookup = {n: i for i, n in enumerate(self.node_ids)}
        unknown = [i for i in ids if i not in lookup]
        if unknown:
            raise DataValidationError(f"{where}: sensors {unknown[:5]} are not in the truth data ({origin})")
        return np.array([lookup[i] for i in ids])

    def index_of(self, node_ids: tuple[str, ...], origin: str = "") -> np.ndarray:
        """Token index of each of a model's ``node_ids`` (sensors by id; grid cells, which have none, in order);
        an error names the ones this data lacks."""
        if self.lat is not None or not node_ids:
            return np.arange(self.n_nodes)
        where = {n: i for i, n in enumerate(self.node_ids)}
        missing = [n for n in map(str, node_ids) if n not in where]
        if missing:
            raise DataValidationError(
                f"{origin}: {len(missing)} of the model's {len(node_ids)} sensors are not in the data "
                f"({', '.join(missing[:10])}); use the data set the model was trained on"
            )
        return np.array([where[str(n)] for n in node_ids])

    def select(self, keep: np.ndarray, origin: str = "") -> "Geometry":
        """The geometry of tokens ``keep`` (sorted indices); grids refuse (their cells form one layout)."""
        if self.lat is not None:
            raise DataValidationError(
                f"{origin}: cells of a lat-lon grid cannot be dropped (the grid models need the whole "
                f"{len(self.lat)} x {len(self.lon)} layout); use dataset.unobserved_nodes=keep: never-observed cells "
                "stay as missing inputs and are not scored"
            )
        adjacency = None if self.adjacency is None else self.adjacency[np.ix_(keep, keep)]
        coords = None if self.node_coords is None else self.node_coords[keep]
        return Geometry.graph([self.node_ids[i] for i in keep], coords, adjacency)

    def describe(self, node: int) -> str:
        """A token's name for messages: its sensor id or its cell's (lat, lon)."""
        if self.lat is None:
            return self.node_ids[node]
        return f"({self.node_coords[node, 0]:g}, {self.node_coords[node, 1]:g})"
