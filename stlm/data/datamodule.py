"""Lightning datamodule: a source, windows, a chronological split and a scaler fitted on training data only.

``prepare_data`` only fetches or converts (sources that download do it there); ``setup`` builds state on every
rank: it loads the series once, checks that every split holds at least one sample, fits the scaler on the
training period ignoring missing values, checks which calendar features the training period covers, and
builds one :class:`~stlm.data.windowing.WindowDataset` per split.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from stlm.data.calendar import calendar_index, check_coverage, steps_per_day
from stlm.data.scalers import StandardScaler
from stlm.data.sources.base import DataValidationError, Source, SpatioTemporalSeries
from stlm.data.spec import DataSpec
from stlm.data.loaders import SplitLoaders
from stlm.data.splits import SPLITS, ChronologicalSplit
from stlm.data.windowing import WindowDataset

log = logging.getLogger(__name__)

UNOBSERVED_NODE_POLICIES = ("keep", "drop")


class SpatioTemporalDataModule(SplitLoaders, pl.LightningDataModule):
    """Windows of ``window`` input and ``horizon`` target steps over a source's series, split in time.

    Args:
        source: anything with ``load() -> SpatioTemporalSeries``.
        window, horizon: input and forecast lengths in steps.
        stride: step between consecutive training samples (validation and test use every sample).
        split: train/val/test fractions of the time axis.
        batch_size, eval_batch_size: samples per batch in training and in evaluation.
        num_workers: DataLoader workers (0 keeps everything in this process; batches are cheap gathers).
        scaler_per_node: scale each node separately instead of each channel.
        unobserved_nodes: what to do with nodes never observed in the training period: ``keep`` them
            (reported; the model sees them as missing inputs) or ``drop`` them from the data set.
        history_across_splits: let validation and test inputs reach back into earlier periods (targets never
            do; see :mod:`stlm.data.splits`). Needed for windows longer than the validation period.
        eval_stride: step between validation and test samples (1 = every sample; larger values evaluate a
            regular subsample of forecast times, for models too costly to score at every step).
    """

    def __init__(
        self,
        source: Source,
        window: int = 12,
        horizon: int = 12,
        stride: int = 1,
        split: ChronologicalSplit | dict | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        scaler_per_node: bool = False,
        unobserved_nodes: str = "keep",
        history_across_splits: bool = False,
        eval_stride: int = 1,
    ):
        super().__init__()
        for name, value in (("window", window), ("horizon", horizon), ("stride", stride), ("eval_stride", eval_stride),
                            ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"dataset.{name} must be a positive integer, got {value!r}")
        if unobserved_nodes not in UNOBSERVED_NODE_POLICIES:
            raise ValueError(f"dataset.unobserved_nodes={unobserved_nodes!r}; choose one of {list(UNOBSERVED_NODE_POLICIES)}")
        self.source = source
        self.window, self.horizon, self.stride = window, horizon, stride
        if isinstance(split, ChronologicalSplit):
            self.split = split
        else:
            self.split = ChronologicalSplit(**dict(split or {}))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.scaler = StandardScaler(per_node=scaler_per_node)
        self.unobserved_nodes = unobserved_nodes
        self.history_across_splits = bool(history_across_splits)
        self.eval_stride = eval_stride
        self.series: SpatioTemporalSeries | None = None
        self.datasets: dict[str, WindowDataset] = {}
        self._spec: DataSpec | None = None

    # ------------------------------------------------------------------ lifecycle
    def prepare_data(self) -> None:
        prepare = getattr(self.source, "prepare", None)
        if callable(prepare):
            prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        series = self.source.load()
        self.periods = self.split.periods(series.n_steps)
        self._check_lengths(series)
        series = self._handle_unobserved_nodes(series)
        a, b = self.periods["train"]
        self.scaler.fit(series.values[a:b], series.mask[a:b])
        scaled = np.where(series.mask, self.scaler.transform(series.values), 0.0).astype(np.float32)

        n_slots = steps_per_day(series.freq)
        calendar = calendar_index(series.timestamps, n_slots)
        coverage = check_coverage(calendar, self.periods, series.origin or series.name)
        self.series, self.calendar = series, calendar
        starts = self.split.sample_starts(
            series.n_steps, self.window, self.horizon, self.stride, history_across_splits=self.history_across_splits,
            eval_stride=self.eval_stride,
        )
        tensors = dict(
            scaled=torch.from_numpy(scaled),
            values=torch.from_numpy(series.values),
            mask=torch.from_numpy(series.mask),
            calendar=torch.from_numpy(calendar),
        )
        self.datasets = {
            name: WindowDataset(**tensors, starts=starts[name], window=self.window, horizon=self.horizon)
            for name in SPLITS
        }
        self._spec = DataSpec(
            n_nodes=series.n_nodes,
            n_channels=series.n_channels,
            window=self.window,
            horizon=self.horizon,
            steps_per_day=n_slots if coverage["time_of_day"] else 0,
            days_per_week=7 if coverage["day_of_week"] else 0,
            interval_minutes=series.freq / pd.Timedelta(minutes=1),
            channels=tuple(series.channels),
            units=tuple(series.units),
            node_ids=tuple(series.node_ids),
            adjacency=series.adjacency,
        )
        log.info(
            "data %s: %d steps x %d nodes x %d channels every %s; samples train/val/test = %d/%d/%d",
            series.name, series.n_steps, series.n_nodes, series.n_channels, series.freq,
            *(len(self.datasets[s]) for s in SPLITS),
        )

    def _check_lengths(self, series: SpatioTemporalSeries) -> None:
        span = self.window + self.horizon
        where = series.origin or series.name
        for name in SPLITS:
            a, b = self.periods[name]
            # With history across splits, a val/test sample needs only its targets inside the period.
            needed, room = (self.horizon, b) if self.history_across_splits and name != "train" else (span, b - a)
            if room < span or b - a < needed:
                raise DataValidationError(
                    f"{where}: dataset.window ({self.window}) + dataset.horizon ({self.horizon}) = {span} steps do not "
                    f"fit in the {name} period, which has {b - a} of the series' {series.n_steps} steps "
                    f"(split {self.split.train}/{self.split.val}/{self.split.test}); use a shorter window or horizon, "
                    "a longer series, other dataset.split fractions"
                    + ("" if self.history_across_splits else ", or dataset.history_across_splits=true")
                )

    def _handle_unobserved_nodes(self, series: SpatioTemporalSeries) -> SpatioTemporalSeries:
        """Report nodes never observed in the training period; drop them if configured."""
        a, b = self.periods["train"]
        observed = series.mask[a:b].any(axis=(0, 2))
        if observed.all():
            return series
        ids = [series.node_ids[i] for i in np.flatnonzero(~observed)]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        action = "dropped" if self.unobserved_nodes == "drop" else "kept (inputs missing, targets not scored when missing)"
        warnings.warn(
            f"{series.origin or series.name}: {len(ids)} of {series.n_nodes} nodes have no observation in the "
            f"training period ({shown}); {action} (dataset.unobserved_nodes=keep|drop)",
            stacklevel=2,
        )
        if self.unobserved_nodes == "keep":
            return series
        keep = np.flatnonzero(observed)
        adjacency = None if series.adjacency is None else series.adjacency[np.ix_(keep, keep)]
        coords = None if series.node_coords is None else series.node_coords[keep]
        return SpatioTemporalSeries(
            values=np.ascontiguousarray(series.values[:, keep]),
            mask=np.ascontiguousarray(series.mask[:, keep]),
            timestamps=series.timestamps,
            node_ids=[series.node_ids[i] for i in keep],
            channels=series.channels,
            units=series.units,
            adjacency=adjacency,
            node_coords=coords,
            name=series.name,
            origin=series.origin,
        )

    # ------------------------------------------------------------------ accessors
    @property
    def spec(self) -> DataSpec:
        if self._spec is None:
            raise RuntimeError("datamodule.spec is known after setup(); call datamodule.setup() first")
        return self._spec

    def period(self, split: str) -> dict[str, np.ndarray]:
        """Raw values [T_s, N, C], mask and calendar [T_s, 2] of one split's period (for fitted models)."""
        a, b = self.periods[split]
        return {"values": self.series.values[a:b], "mask": self.series.mask[a:b], "calendar": self.calendar[a:b]}

    def fingerprint(self) -> str:
        """Content hash of the loaded series (logged as the run's data fingerprint)."""
        return self.series.fingerprint()
