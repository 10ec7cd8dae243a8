"""Embedded default grid: a seeded synthetic temperature-like field on a coarse global lat-lon grid.

Lets a fresh machine train on a grid with no download, and has the structure that separates a forecaster from
the two climate baselines:

    T(t, lat, lon) = T_eq(lat, day of year) + land(lat, lon) * D(local solar time) + A(t, lat, lon) + noise

* **Seasonal forcing** ``T_eq = 300 - 45 sin^2(lat) + 12 sin(lat) cos(2 pi (doy - 200) / 365.25)`` (K):
  warm tropics, cold poles, opposite seasons in the two hemispheres. A climatology fitted on one part of the
  year is biased in another.
* **Diurnal forcing** ``D = a cos(2 pi (hour_utc + lon / 15 - 15) / 24) cos(lat)``, with amplitude 6 K over
  land and 1.5 K over sea (a seeded land-sea mask of smooth blobs, exposed as the static ``lsm``). The 6-hourly
  cycle makes persistence poor; the hour-of-day climatology knows it.
* **Weather** ``A``: anomalies driven by spatially smooth random forcing, advected by a zonal wind
  ``u(lat)`` (westerly jets near +-45 deg, easterly trade winds) and a stationary meridional wave ``v``,
  diffused and damped (time scale ``damping_days``). Semi-Lagrangian advection in sub-steps of one hour.
  Weather moves about one cell per 6-hour step, so neighbours and history predict it and the calendar cannot.

Shapes: ``t2m`` [T, n_lat, n_lon] (K), ``lsm`` [n_lat, n_lon] in {0, 1}; latitude cell centres from -90 + d/2
to 90 - d/2 and longitudes 0 .. 360 - d (the reader wraps them to -180 .. 180).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import gaussian_filter, map_coordinates

from stlm.data.sources.climate_grid import ClimateGrid, grid_from_dataset

EARTH_RADIUS_M = 6.371e6


class SyntheticClimateSource:
    """Seeded synthetic ``t2m`` on an ``n_lat x n_lon`` global grid every ``hours_per_step`` hours.

    Args:
        n_lat, n_lon: grid size (default 32 x 64, 5.625 degrees, the coarsest WeatherBench grid).
        n_days: length of the series in days.  hours_per_step: output interval (must divide 24).
        seed: the random seed (grid, land mask, weather).  start: first timestamp.
        weather_std: approximate standard deviation of the weather anomalies (K).
        damping_days: e-folding time of the anomalies.  wind_ms: peak jet speed (m/s).
        noise_std: measurement noise (K).  spinup_days: weather simulated before the first step.
        name: short name (experiment name).
    """

    def __init__(
        self,
        n_lat: int = 32,
        n_lon: int = 64,
        n_days: int = 365,
        hours_per_step: int = 6,
        seed: int = 0,
        start: str = "2021-01-01 00:00",
        weather_std: float = 4.0,
        damping_days: float = 4.0,
        wind_ms: float = 20.0,
        noise_std: float = 0.2,
        spinup_days: float = 5.0,
        name: str = "climate",
    ):
        if n_lat < 2 or n_lon < 4 or n_days < 1 or hours_per_step < 1 or 24 % hours_per_step:
            raise ValueError(
                "SyntheticClimateSource: need n_lat >= 2, n_lon >= 4, n_days >= 1 and hours_per_step dividing 24; got "
                f"n_lat={n_lat}, n_lon={n_lon}, n_days={n_days}, hours_per_step={hours_per_step}"
            )
        self.n_lat, self.n_lon, self.n_days, self.hours_per_step = n_lat, n_lon, n_days, hours_per_step
        self.seed, self.start, self.weather_std = seed, start, weather_std
        self.damping_days, self.wind_ms, self.noise_std, self.name = damping_days, wind_ms, noise_std, name
        self.spinup_hours = int(round(24 * spinup_days))
        d_lat, d_lon = 180.0 / n_lat, 360.0 / n_lon
        self.lat = -90.0 + d_lat / 2 + d_lat * np.arange(n_lat)
        self.lon = d_lon * np.arange(n_lon)
        self.timestamps = pd.date_range(start, periods=n_days * 24 // hours_per_step, freq=f"{hours_per_step}h")

    # ---------------------------------------------------------------- pieces
    def land_mask(self) -> np.ndarray:
        """[n_lat, n_lon] {0, 1}: smooth random blobs, about 30 % land, seeded."""
        rng = np.random.default_rng(self.seed + 1)
        field = gaussian_filter(rng.standard_normal((self.n_lat, self.n_lon)), sigma=max(self.n_lat / 10, 1.0), mode=("nearest", "wrap"))
        return (field > np.quantile(field, 0.7)).astype(np.float32)

    def _forcing(self, times: pd.DatetimeIndex, land: np.ndarray) -> np.ndarray:
        """Seasonal + diurnal part [len(times), n_lat, n_lon] (K)."""
        lat = np.deg2rad(self.lat)[None, :, None]
        doy = np.asarray(times.day_of_year, dtype=np.float64)[:, None, None]
        hour = np.asarray(times.hour + times.minute / 60.0, dtype=np.float64)[:, None, None]
        t_eq = 300.0 - 45.0 * np.sin(lat) ** 2 + 12.0 * np.sin(lat) * np.cos(2 * np.pi * (doy - 200.0) / 365.25)
        amplitude = (1.5 + 4.5 * land)[None] * np.cos(lat)
        local = hour + self.lon[None, None, :] / 15.0
        return t_eq + amplitude * np.cos(2 * np.pi * (local - 15.0) / 24.0)

    def _winds(self) -> tuple[np.ndarray, np.ndarray]:
        """Displacements per hour in grid cells along lon and lat, [n_lat, n_lon] each."""
        lat = np.deg2rad(self.lat)[:, None]
        lon = np.deg2rad(self.lon)[None, :]
        shape = (self.n_lat, self.n_lon)
        u = np.broadcast_to(self.wind_ms * np.sin(2 * lat) ** 2 * np.sign(np.abs(lat) - 0.45), shape)  # westerlies poleward of ~26 deg
        v = np.broadcast_to(0.25 * self.wind_ms * np.sin(3 * lon) * np.cos(lat) ** 2, shape)
        metres_per_cell_lon = EARTH_RADIUS_M * np.deg2rad(360.0 / self.n_lon) * np.maximum(np.cos(lat), 0.05)
        metres_per_cell_lat = EARTH_RADIUS_M * np.deg2rad(180.0 / self.n_lat)
        return u * 3600.0 / metres_per_cell_lon, v * 3600.0 / metres_per_cell_lat

    def weather(self) -> Iterator[np.ndarray]:
        """The anomaly field [n_lat, n_lon] (K) at every output step, advanced in one-hour sub-steps."""
        rng = np.random.default_rng(self.seed)
        du, dv = self._winds()
        rows, cols = np.meshgrid(np.arange(self.n_lat, dtype=np.float64), np.arange(self.n_lon, dtype=np.float64), indexing="ij")
        departure = np.stack([np.clip(rows - dv, 0, self.n_lat - 1), (cols - du) % self.n_lon])
        decay = np.exp(-1.0 / (24.0 * self.damping_days))
        sigma = max(self.n_lat / 16, 0.75)
        # Forcing amplitude that gives a stationary std of about weather_std for smoothed AR(1) noise.
        kick = self.weather_std * np.sqrt(1 - decay**2) * 3.8 * sigma
        anomaly = np.zeros((self.n_lat, self.n_lon))
        for _ in range(self.spinup_hours):  # so the series starts with weather
            anomaly = self._step(anomaly, departure, decay, kick, sigma, rng)
        for _ in range(len(self.timestamps)):
            yield anomaly.astype(np.float32)
            for _ in range(self.hours_per_step):
                anomaly = self._step(anomaly, departure, decay, kick, sigma, rng)

    def _step(self, anomaly, departure, decay, kick, sigma, rng) -> np.ndarray:
        moved = map_coordinates(anomaly, departure, order=1, mode="grid-wrap")
        noise = gaussian_filter(rng.standard_normal(anomaly.shape), sigma=sigma, mode=("nearest", "wrap"))
        return decay * moved + kick * noise

    # ---------------------------------------------------------------- outputs
    def blocks(self, block_steps: int = 64) -> Iterator[tuple[pd.DatetimeIndex, np.ndarray]]:
        """(timestamps, t2m [block, n_lat, n_lon] float32) blocks in time order (bounded memory)."""
        land = self.land_mask()
        rng = np.random.default_rng(self.seed + 2)
        weather = self.weather()
        for a in range(0, len(self.timestamps), block_steps):
            times = self.timestamps[a : a + block_steps]
            anomaly = np.stack([next(weather) for _ in range(len(times))])
            values = self._forcing(times, land) + anomaly + self.noise_std * rng.standard_normal(anomaly.shape)
            yield times, values.astype(np.float32)

    def dataset(self) -> xr.Dataset:
        """The whole series as an in-memory ``xr.Dataset`` (``t2m`` and the static ``lsm``)."""
        parts = list(self.blocks())
        values = np.concatenate([v for _, v in parts])
        return xr.Dataset(
            {
                "t2m": (("time", "lat", "lon"), values, {"units": "K", "long_name": "synthetic 2 m temperature"}),
                "lsm": (("lat", "lon"), self.land_mask(), {"units": "1", "long_name": "land-sea mask"}),
            },
            coords={"time": self.timestamps, "lat": self.lat, "lon": self.lon},
            attrs={"source": f"stlm SyntheticClimateSource(seed={self.seed})"},
        )

    def open(self) -> ClimateGrid:
        origin = f"synthetic climate grid {self.n_lat}x{self.n_lon} (seed {self.seed})"
        return grid_from_dataset(self.dataset(), ["t2m"], land_sea_mask="lsm", name=self.name, origin=origin)
