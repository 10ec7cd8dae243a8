"""The one Lightning datamodule of every data set: a source, windows, a chronological split, training statistics.

Sensors and grids differ only in their source (:mod:`stlm.data.sources`): ``source.open()`` returns a
:class:`~stlm.data.sources.base.Series` (in memory or lazy) with a geometry (a graph or a lat-lon grid). Every
consumer (training, the forecast job, the evaluator, the streamer) asks this class for what it needs: the
``spec`` a model is built from, the ``windows`` of a split or of any init times, the ``calendar``, the scaler,
the seasonal tables (``climatology``) and the metrics and loss weights of the engine (``engine_options``).

``prepare_data`` only fetches or converts (sources that download do it there); ``setup`` builds state on every
rank: it opens the series, checks that every split holds a sample, fits the scaler on the training period block
by block ignoring missing values (or reuses ``normalization_path``), reports tokens never observed in training
(dropping sensors on request), checks which calendar features the training period covers, and builds one
:class:`~stlm.data.windowing.WindowDataset` per split.
"""

from __future__ import annotations

import logging
import warnings
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from stlm.data.calendar import N_COLUMNS, calendar_index, check_coverage, extended_timestamps, steps_per_day
from stlm.data.loaders import SplitLoaders
from stlm.data.scalers import StandardScaler, load_normalization, save_normalization
from stlm.data.seasonal import (
    CLIMATOLOGY_COLUMNS,
    CLIMATOLOGY_KINDS,
    choose_climatology,
    climatology_size,
    climatology_table,
    seasonal_sums,
)
from stlm.data.sources.base import DataValidationError, Series, Source
from stlm.data.spec import DataSpec
from stlm.data.splits import SPLITS, ChronologicalSplit
from stlm.data.windowing import PaddedSeries, WindowDataset
from stlm.metrics.horizon import ForecastMetrics
from stlm.metrics.probabilistic import ProbabilisticMetrics, band_metric_factory

log = logging.getLogger(__name__)

UNOBSERVED_NODE_POLICIES = ("keep", "drop")
LOSS_WEIGHTINGS = ("none", "area_over_std")
METRIC_OPTIONS = ("keys", "average", "per_channel", "mape", "acc")
# period() materializes a split in memory (for models fitted from arrays); refuse beyond this many values.
MAX_IN_MEMORY_VALUES = 200_000_000


class SpatioTemporalDataModule(SplitLoaders, pl.LightningDataModule):
    """Windows of ``window`` input and ``horizon`` target steps over a source's series, split in time.

    Args:
        source: anything with ``open() -> Series``.
        window, horizon: input and forecast lengths in steps.
        stride: step between consecutive training samples.
        split: train/val/test fractions of the time axis.
        batch_size, eval_batch_size: samples per batch in training and in evaluation.
        num_workers: DataLoader workers (0 keeps everything in this process).
        scaler_per_node: scale each node (cell) separately instead of each channel.
        unobserved_nodes: tokens never observed in the training period: ``keep`` them (reported; inputs
            missing, targets not scored when missing) or ``drop`` them (sensors only: a grid keeps its cells).
        history_across_splits: let validation and test inputs reach back into earlier periods (targets never
            do; see :mod:`stlm.data.splits`). Needed for windows longer than the validation period.
        eval_stride: step between validation and test samples (1 = every sample).
        normalization_path: ``normalization.json`` to reuse if it exists, else to write after fitting; None
            fits and keeps the statistics in memory only.
        climatology: the seasonal key of :attr:`climatology` (``auto``, ``hour_of_day``, ``day_of_year``,
            ``month_of_year``; :mod:`stlm.data.seasonal`), used by ACC, the climatology baseline and the
            grid model's prior.
        day_of_week: embed the day of week (off for data without a weekly cycle, such as the weather).
        metrics: options of the engine's :class:`~stlm.metrics.horizon.ForecastMetrics`: ``keys`` (step |
            lead), ``average`` (pooled | lead_mean), ``per_channel``, ``mape``, ``acc`` (needs the
            climatology).
        loss_weighting: ``none`` (plain masked mean) or ``area_over_std`` (each token by its area weight,
            each channel by 1 / its std, so variables in different units count alike).
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
        normalization_path: str | None = None,
        climatology: str = "auto",
        day_of_week: bool = True,
        metrics: dict | None = None,
        loss_weighting: str = "none",
    ):
        super().__init__()
        for name, value in (("window", window), ("horizon", horizon), ("stride", stride), ("eval_stride", eval_stride),
                            ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"dataset.{name} must be a positive integer, got {value!r}")
        for name, value, choices in (("unobserved_nodes", unobserved_nodes, UNOBSERVED_NODE_POLICIES),
                                     ("climatology", climatology, CLIMATOLOGY_KINDS),
                                     ("loss_weighting", loss_weighting, LOSS_WEIGHTINGS)):
            if value not in choices:
                raise ValueError(f"dataset.{name}={value!r}; choose one of {list(choices)}")
        unknown = sorted(set(metrics or {}) - set(METRIC_OPTIONS))
        if unknown:
            raise ValueError(f"dataset.metrics has unknown keys {unknown}; valid keys: {list(METRIC_OPTIONS)}")
        self.source = source
        self.window, self.horizon, self.stride = window, horizon, stride
        self.split = split if isinstance(split, ChronologicalSplit) else ChronologicalSplit(**dict(split or {}))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.scaler = StandardScaler(per_node=scaler_per_node)
        self.unobserved_nodes = unobserved_nodes
        self.history_across_splits = bool(history_across_splits)
        self.eval_stride = eval_stride
        self.normalization_path = normalization_path
        self.climatology_kind = climatology
        self.day_of_week = bool(day_of_week)
        self.metric_options = dict(metrics or {})
        self.loss_weighting = loss_weighting
        self.series: Series | None = None
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
        series = self.source.open()
        self.where = series.origin or series.name
        self.periods = self.split.periods(series.n_steps)
        self._check_lengths(series)
        series = self._fit_scaler(series)
        self.n_slots = steps_per_day(series.freq)
        self.calendar = calendar_index(series.timestamps, self.n_slots)
        coverage = check_coverage(self.calendar, self.periods, self.where, self.day_of_week)
        self.climatology_kind = choose_climatology(self.climatology_kind, self.calendar, self.periods["train"],
                                                   series.freq, self.where)
        self.series = series
        starts = self.split.sample_starts(
            series.n_steps, self.window, self.horizon, self.stride, history_across_splits=self.history_across_splits,
            eval_stride=self.eval_stride,
        )
        self.datasets = {name: self.windows(starts[name]) for name in SPLITS}
        geometry = series.geometry
        self._spec = DataSpec(
            n_nodes=series.n_nodes,
            n_channels=series.n_channels,
            window=self.window,
            horizon=self.horizon,
            steps_per_day=self.n_slots if coverage["time_of_day"] else 0,
            days_per_week=7 if coverage["day_of_week"] else 0,
            interval_minutes=series.freq / pd.Timedelta(minutes=1),
            channels=tuple(series.channels),
            units=tuple(series.units),
            node_ids=tuple(geometry.node_ids),
            adjacency=geometry.adjacency,
            grid_shape=geometry.grid_shape,
            node_coords=geometry.node_coords,
            node_features=geometry.static_features(),
            time_features=N_COLUMNS,
        )
        log.info(
            "data %s: %d steps x %d %s x %d channels %s every %s; samples train/val/test = %d/%d/%d; climatology %s",
            series.name, series.n_steps, series.n_nodes, geometry.token_name, series.n_channels, list(series.channels),
            series.freq, *(len(self.datasets[s]) for s in SPLITS), self.climatology_kind,
        )

    def _check_lengths(self, series: Series) -> None:
        span = self.window + self.horizon
        for name in SPLITS:
            a, b = self.periods[name]
            # With history across splits, a val/test sample needs only its targets inside the period.
            needed, room = (self.horizon, b) if self.history_across_splits and name != "train" else (span, b - a)
            if room < span or b - a < needed:
                raise DataValidationError(
                    f"{self.where}: dataset.window ({self.window}) + dataset.horizon ({self.horizon}) = {span} steps do "
                    f"not fit in the {name} period, which has {b - a} of the series' {series.n_steps} steps "
                    f"(split {self.split.train}/{self.split.val}/{self.split.test}); use a shorter window or horizon, "
                    "a longer series, other dataset.split fractions"
                    + ("" if self.history_across_splits else ", or dataset.history_across_splits=true")
                )

    def _fit_scaler(self, series: Series) -> Series:
        """Fit (or reuse) the scaler on the training period; report tokens never observed there, drop them on
        request. Returns the series the datamodule works on."""
        a, b = self.periods["train"]
        path = Path(self.normalization_path) if self.normalization_path else None
        counts = None
        if path is not None and path.exists():
            log.info("normalization reused from %s", path)
            self.scaler = load_normalization(path, list(series.channels))
        else:
            counts = self.scaler.fit_series(series, a, b)
            if counts.sum(0).min() == 0:
                empty = [c for c, n in zip(series.channels, counts.sum(0)) if n == 0]
                raise DataValidationError(
                    f"{self.where}: channel(s) {empty} have no observed value in the training period (all missing); "
                    "drop them from the data set (dataset.variables) or use another period"
                )
            if path is not None:
                save_normalization(path, self.scaler, list(series.channels), self.where)
        if counts is None and self.unobserved_nodes == "drop":
            counts = StandardScaler().fit_series(series, a, b)  # which nodes to drop (the statistics are reused)
        if counts is None:
            return series
        observed = counts.sum(1) > 0
        if observed.all():
            return series
        geometry = series.geometry
        shown = ", ".join(geometry.describe(int(i)) for i in np.flatnonzero(~observed)[:10])
        n_missing = int((~observed).sum())
        shown += f" and {n_missing - 10} more" if n_missing > 10 else ""
        action = "dropped" if self.unobserved_nodes == "drop" else "kept (inputs missing, targets not scored when missing)"
        warnings.warn(
            f"{self.where}: {n_missing} of {series.n_nodes} {geometry.token_name} have no observation in the training "
            f"period ({shown}); {action} (dataset.unobserved_nodes=keep|drop)",
            stacklevel=3,
        )
        if self.unobserved_nodes == "keep":
            return series
        keep = np.flatnonzero(observed)
        series = series.select_nodes(keep)
        if self.scaler.per_node:
            self.scaler.mean, self.scaler.std = self.scaler.mean[keep], self.scaler.std[keep]
        return series

    # ------------------------------------------------------------------ what consumers ask for
    @property
    def spec(self) -> DataSpec:
        if self._spec is None:
            raise RuntimeError("datamodule.spec is known after setup(); call datamodule.setup() first")
        return self._spec

    def windows(self, starts: np.ndarray, scaler: StandardScaler | None = None, pad_steps: int = 0) -> WindowDataset:
        """Samples starting at steps ``starts``, scaled with ``scaler`` (default: this datamodule's). With
        ``pad_steps`` the series continues by that many missing steps whose calendar follows the regular time
        axis, so forecasts may reach past the end of the data (their targets are unobserved)."""
        series, calendar = self.series, self.calendar
        if pad_steps:
            series = PaddedSeries(series, pad_steps)
            calendar = calendar_index(extended_timestamps(self.series.timestamps, pad_steps), self.n_slots)
        return WindowDataset(series, scaler or self.scaler, calendar, starts, self.window, self.horizon)

    def targets(self, valid_time: np.ndarray, nodes: np.ndarray | None = None,
                channels: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Observations at ``valid_time`` [k, H] (datetime64) of tokens ``nodes`` and channels ``channels`` (default
        all): ``y`` [k, H, N', C'] original units (0 where missing), ``mask`` and ``y_time`` [k, H, K] (the batch
        keys the metrics read). A valid time outside the data is an unobserved target, never an error."""
        k, H = valid_time.shape
        steps = self.series.timestamps.get_indexer(pd.DatetimeIndex(valid_time.ravel())).reshape(k, H)
        inside = steps >= 0
        safe = np.where(inside, steps, 0)
        lo, hi = int(safe[inside].min(initial=0)), int(safe[inside].max(initial=0)) + 1
        raw = self.series.read(lo, hi)[np.clip(safe - lo, 0, hi - lo - 1)]  # [k, H, N, C], NaN = missing
        if nodes is not None:
            raw = raw[:, :, nodes]
        if channels is not None:
            raw = raw[..., channels]
        observed = np.isfinite(raw) & inside[..., None, None]
        return {"y": torch.from_numpy(np.where(observed, raw, 0.0).astype(np.float32)),
                "mask": torch.from_numpy(observed.astype(np.float32)),
                "y_time": torch.from_numpy(self.calendar[safe])}

    @cached_property
    def climatology(self) -> np.ndarray:
        """[K, N, C] training-period mean per value of the climatology key, original units (computed once)."""
        a, b = self.periods["train"]
        size = climatology_size(self.climatology_kind, self.n_slots)
        total, count = seasonal_sums(self.series, self.calendar[:, self.climatology_column], size, a, b)
        return climatology_table(total, count)

    @property
    def climatology_column(self) -> int:
        """The calendar column that indexes :attr:`climatology` (:mod:`stlm.data.calendar`)."""
        return CLIMATOLOGY_COLUMNS[self.climatology_kind]

    def metric_factory(self, horizon: int | None = None, interval_minutes: float | None = None,
                       nodes: np.ndarray | None = None, channels: np.ndarray | None = None, levels=None,
                       members: int | None = None):
        """``f(**metric_kwargs) -> ForecastMetrics`` with this data's token weights, lead names and options;
        an evaluator scoring a subset passes the tokens ``nodes`` and channel indices ``channels`` it scores,
        and the forecasts' horizon and step. With quantile ``levels`` the metric scores quantile forecasts
        [B, H, N, C, Q]: the point metrics of the median and CRPS, pinball, coverage and width
        (:class:`~stlm.metrics.probabilistic.BandForecastMetrics`); with ``members`` ensembles [B, H, N, C, M]
        (the members' median, the fair CRPS, the members' central interval)."""
        spec, options = self.spec, dict(self.metric_options)
        nodes = slice(None) if nodes is None else np.asarray(nodes)
        picked = np.arange(spec.n_channels) if channels is None else np.asarray(channels)
        climatology = torch.from_numpy(self.climatology[:, nodes][..., picked]) if options.pop("acc", False) else None
        common = (horizon or spec.horizon, interval_minutes or spec.interval_minutes, [spec.channels[c] for c in picked],
                  torch.from_numpy(self.series.geometry.area_weights()[nodes]))
        point = partial(ForecastMetrics, *common, climatology, self.climatology_column, **options)
        if levels is None and members is None:
            return point
        if levels is not None and members is not None:
            raise ValueError("metric_factory: a forecast has quantile levels or ensemble members, not both")
        band_options = {k: options[k] for k in ("keys", "average", "per_channel") if k in options}
        return band_metric_factory(point, partial(ProbabilisticMetrics, *common, **band_options), levels)

    def engine_options(self, levels=None, members: int | None = None) -> dict:
        """The engine arguments that come from the data: the metrics (for a forecast at quantile ``levels`` or of
        ``members`` ensemble members, if given) and the training loss's weights."""
        loss_weights = None
        if self.loss_weighting == "area_over_std":
            area = self.series.geometry.area_weights()[:, None]  # [N, 1]
            loss_weights = torch.from_numpy(area / self.scaler.std).float()  # [N, C]
        return {"metrics": self.metric_factory(levels=levels, members=members), "loss_weights": loss_weights}

    def period(self, split: str) -> dict[str, np.ndarray]:
        """Values [T_s, N, C] (0 where missing), mask and calendar [T_s, K] of one split's period, in memory
        (for models fitted from arrays); refuses data too large to hold."""
        a, b = self.periods[split]
        size = (b - a) * self.series.n_nodes * self.series.n_channels
        if size > MAX_IN_MEMORY_VALUES:
            raise MemoryError(
                f"{self.where}: period({split!r}) would load {size:,} values; use the models and baselines that read "
                "lazily (model=grid, climatology, persistence)"
            )
        raw = self.series.read(a, b)
        observed = np.isfinite(raw)
        return {"values": np.where(observed, raw, np.float32(0.0)), "mask": observed, "calendar": self.calendar[a:b]}

    def fingerprint(self) -> str:
        """Content hash of the series (logged as the run's data fingerprint)."""
        return self.series.fingerprint()
