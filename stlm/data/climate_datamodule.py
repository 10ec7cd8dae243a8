"""Lightning datamodule for lat-lon grids: a lazy climate source, a chronological split, lazy statistics.

``setup`` opens the source (validating its files), checks every split holds a sample, fits the per-channel
normalization on the training period with dask (or reuses ``normalization_path`` when it exists, and writes it
there when it does not), builds the grid calendar and one :class:`GridWindowDataset` per split. Windows are
read from the files batch by batch; nothing loads the archive whole (``period()`` does, for small grids only).

Every grid cell is a token (N = H * W, latitude-major); models that group cells into patches do so themselves
(:class:`stlm.models.grid.GridForecaster`). The spec carries the grid shape, the cell coordinates and static
features. ``engine_options()`` gives the engine latitude-weighted per-lead metrics and a training loss
weighted by cos(latitude) / channel std, so variables in different units count alike.
"""

from __future__ import annotations

import logging
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from stlm.data.calendar import steps_per_day
from stlm.data.climate_features import cell_coords, grid_calendar, static_features
from stlm.data.climate_stats import (
    choose_climatology,
    fit_climatology,
    fit_normalization,
    load_normalization,
    save_normalization,
)
from stlm.data.climate_windows import GridWindowDataset
from stlm.data.sources.base import DataValidationError
from stlm.data.sources.climate_grid import ClimateGrid
from stlm.data.spec import DataSpec
from stlm.data.loaders import SplitLoaders
from stlm.data.splits import SPLITS, ChronologicalSplit
from stlm.metrics.weighted import LeadMetrics, latitude_weights

log = logging.getLogger(__name__)

# period() materializes a split in memory (for models fitted from arrays); refuse beyond this many values.
MAX_IN_MEMORY_VALUES = 200_000_000


class ClimateDataModule(SplitLoaders, pl.LightningDataModule):
    """Windows of ``window`` input and ``horizon`` target steps over a grid, split in time.

    Args:
        source: anything with ``open() -> ClimateGrid`` (``ClimateSource``, ``SyntheticClimateSource``).
        window, horizon, stride, split, batch_size, eval_batch_size, num_workers: as the sensor datamodule.
        normalization_path: ``normalization.json`` to reuse if it exists, else to write after fitting
            (the run directory by default); None fits and keeps it in memory only.
        climatology: ``auto`` (day of year when training covers every later day of the year, else hour of
            day), ``hour_of_day`` or ``day_of_year``; used by ACC, the climatology baseline and the grid model.
        time_chunk: dask chunk length in time for the training statistics.
    """

    def __init__(
        self,
        source,
        window: int = 8,
        horizon: int = 4,
        stride: int = 1,
        split: ChronologicalSplit | dict | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        normalization_path: str | None = None,
        climatology: str = "auto",
        time_chunk: int = 48,
    ):
        super().__init__()
        for name, value in (("window", window), ("horizon", horizon), ("stride", stride), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"dataset.{name} must be a positive integer, got {value!r}")
        self.source = source
        self.window, self.horizon, self.stride = window, horizon, stride
        self.split = split if isinstance(split, ChronologicalSplit) else ChronologicalSplit(**dict(split or {}))
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.normalization_path = normalization_path
        self.climatology_kind = climatology
        self.time_chunk = time_chunk
        self.grid: ClimateGrid | None = None
        self.datasets: dict[str, GridWindowDataset] = {}
        self._spec: DataSpec | None = None

    # ------------------------------------------------------------------ lifecycle
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        grid = self.source.open()
        T, H, W, C = grid.shape
        self.periods = self.split.periods(T)
        self._check_lengths(grid)
        a, b = self.periods["train"]
        self.scaler = self._normalization(grid, a, b)
        self.n_slots = steps_per_day(grid.freq)
        self.calendar = grid_calendar(grid.timestamps, self.n_slots)
        self.climatology_kind = choose_climatology(self.climatology_kind, self.calendar, self.periods["train"], grid.origin)
        self.grid = grid
        starts = self.split.sample_starts(T, self.window, self.horizon, self.stride)
        self.datasets = {
            name: GridWindowDataset(grid, self.scaler, self.calendar, starts[name], self.window, self.horizon) for name in SPLITS
        }
        self._spec = DataSpec(
            n_nodes=H * W,
            n_channels=C,
            window=self.window,
            horizon=self.horizon,
            steps_per_day=self.n_slots,
            days_per_week=0,  # no weekly cycle in the weather (see stlm.data.climate_features)
            interval_minutes=grid.freq / pd.Timedelta(minutes=1),
            channels=tuple(grid.channels),
            units=tuple(grid.units),
            grid_shape=(H, W),
            node_coords=cell_coords(grid.lat, grid.lon),
            node_features=static_features(grid.lat, grid.lon, grid.land_sea_mask),
            time_features=3,
        )
        log.info(
            "grid %s: %d steps x %d x %d cells x %d channels %s every %s; samples train/val/test = %d/%d/%d; climatology %s",
            grid.name, T, H, W, C, grid.channels, grid.freq, *(len(self.datasets[s]) for s in SPLITS), self.climatology_kind,
        )

    def _check_lengths(self, grid: ClimateGrid) -> None:
        span = self.window + self.horizon
        for name in SPLITS:
            a, b = self.periods[name]
            if b - a < span:
                raise DataValidationError(
                    f"{grid.origin}: dataset.window ({self.window}) + dataset.horizon ({self.horizon}) = {span} steps do "
                    f"not fit in the {name} period, which has {b - a} of the {grid.shape[0]} steps (split "
                    f"{self.split.train}/{self.split.val}/{self.split.test}); use a shorter window or horizon, a longer "
                    "period, or other dataset.split fractions"
                )

    def _normalization(self, grid: ClimateGrid, start: int, stop: int):
        path = Path(self.normalization_path) if self.normalization_path else None
        if path is not None and path.exists():
            log.info("normalization reused from %s", path)
            return load_normalization(path, grid.channels)
        scaler = fit_normalization(grid, start, stop, self.time_chunk)
        if path is not None:
            save_normalization(path, scaler, grid.channels, grid.origin)
        return scaler

    # ------------------------------------------------------------------ accessors
    @property
    def spec(self) -> DataSpec:
        if self._spec is None:
            raise RuntimeError("datamodule.spec is known after setup(); call datamodule.setup() first")
        return self._spec

    @cached_property
    def climatology(self) -> np.ndarray:
        """[K, N, C] training climatology in original units (see ``climatology_column``), computed once, lazily."""
        a, b = self.periods["train"]
        return fit_climatology(self.grid, self.calendar, a, b, self.climatology_kind, self.n_slots, self.time_chunk)

    @property
    def climatology_column(self) -> int:
        """Calendar column that indexes :attr:`climatology`: 0 (time-of-day slot) or 2 (day of year)."""
        return 0 if self.climatology_kind == "hour_of_day" else 2

    def engine_options(self) -> dict:
        """Engine arguments that come from the grid: per-lead lat-weighted metrics and the loss weights."""
        spec = self.spec
        weights = latitude_weights(spec.node_coords[:, 0])
        metrics = partial(
            LeadMetrics, spec.horizon, spec.interval_minutes, spec.channels, torch.from_numpy(weights),
            torch.from_numpy(self.climatology), self.climatology_column,
        )
        loss_weights = torch.from_numpy(weights[:, None] / self.scaler.std[None, :]).float()  # [N, C]
        return {"metrics": metrics, "loss_weights": loss_weights}

    def period(self, split: str) -> dict[str, np.ndarray]:
        """Values [T_s, N, C] (0 where missing), mask and calendar [T_s, 2] of one split, read into memory.

        For models fitted from arrays (the sensor historical average); refuses grids too large to hold.
        """
        a, b = self.periods[split]
        T, H, W, C = self.grid.shape
        if (b - a) * H * W * C > MAX_IN_MEMORY_VALUES:
            raise MemoryError(
                f"{self.grid.origin}: period({split!r}) would load {(b - a) * H * W * C:,} values; use the grid "
                "models and baselines (model=grid, stlm.models.climate_baselines), which read lazily"
            )
        raw = self.grid.read(a, b).reshape(b - a, H * W, C)
        observed = np.isfinite(raw)
        return {"values": np.where(observed, raw, 0.0).astype(np.float32), "mask": observed, "calendar": self.calendar[a:b, :2]}

    def fingerprint(self) -> str:
        return self.grid.fingerprint()
