"""The forecasting engine: a LightningModule around any model of the stlm contract.

It owns what every model shares: inverse scaling of the model's output to original units, the masked training
loss, per-horizon metrics (``val/mae_h3``, ``test/rmse_avg``, ...), optimizer and schedule, and a guard that
stops training on a non-finite loss instead of letting NaN flow into the weights.

A model with ``quantile_levels`` (``model.quantiles``) forecasts quantiles [B, H, N, C, Q]: the loss is then the
masked mean pinball loss over the levels (the quantile form of the MAE: at the median level it is MAE / 2), the
point metrics score the median and CRPS, pinball loss, coverage and width of the 90% interval are logged
beside them (``test/crps_h12``, ``test/coverage90_avg``; :mod:`stlm.metrics.probabilistic`). With
``calibrate_bands`` (default) the model's band scale (:mod:`stlm.nn.band_scale`) is refitted on the
validation predictions at the end of every validation pass (:mod:`stlm.metrics.calibration`), so the saved
checkpoints carry the bands calibrated for their own weights; the validation metrics of a pass use the scale of
the pass before it. Unless ``narrow_bands``, the fit only widens a quantile band, never narrows it below the
head's own (see that argument).

A model with ``ensemble_members`` (``model.ensemble=M``, :mod:`stlm.models.ensemble`) trains as the point model it
wraps and forecasts M members [B, H, N, C, M] in eval mode: the point metrics and the evaluation loss score the
members' median, the band metrics the fair CRPS and the members' central interval, and its spread scale is
refitted on every validation pass as a quantile band is (:mod:`stlm.metrics.spread_calibration`).
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from torch import nn

from stlm.data.scalers import StandardScaler, to_original_units
from stlm.metrics.horizon import ForecastMetrics
from stlm.metrics.masked import masked_loss, weight_mask
from stlm.metrics.probabilistic import ensemble_median, pinball

SPLIT_PREFIXES = ("val", "test")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss, gradient or prediction; raised so the run stops with a
    non-zero exit before anything non-finite reaches the weights or the checkpoints."""


_FIX = (
    "Check the inputs for extreme values, lower the learning rate (engine.optimizer.lr) or clip gradients "
    "(trainer.gradient_clip_val)"
)


def _update_metric(metric, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
    """Metrics read the batch: targets, mask and (ACC) the target times."""
    metric.update(pred, batch)


class ForecastingEngine(pl.LightningModule):
    """Train and evaluate ``model`` on batches of the data contract.

    Args:
        model: maps a batch to scaled predictions [B, H, N, C].
        scaler: the datamodule's fitted scaler; its mean and std become buffers (saved in checkpoints).
        horizon: number of forecast steps H (for the per-horizon metrics).
        loss: ``mae`` (default; robust, the field's reporting metric), ``mse`` or ``huber``, in original units.
        optimizer: factory ``f(params) -> Optimizer`` (a ``_partial_`` config).
        scheduler: optional factory ``f(optimizer, total_steps=...) -> LRScheduler``, stepped every batch.
        mape_min_abs: targets with ``|y|`` at or below this are skipped by MAPE.
        metrics: the data's metric factory ``f(**metric_kwargs) -> ForecastMetrics`` (token weights, lead names,
            options: :meth:`stlm.data.datamodule.SpatioTemporalDataModule.metric_factory`); default: unweighted
            per-horizon metrics. ``compute()`` must return ``mae_avg``; ``update(pred, batch)``.
        loss_weights: optional [N, C] weights of the training loss (grids: cos-latitude / channel std), so
            the loss is ``sum w m err / sum w m``; None keeps the plain masked mean.
        calibrate_bands: refit the model's ``band_scale`` (quantile and ensemble models) on every validation pass.
        narrow_bands: let that fit make a quantile band narrower than the head's (or the baseline's residual
            band). Off by default: those bands are fitted to the training split, where errors are smaller than on
            new data, so a fit that asks for narrower ones mostly says the validation period was calm. On ERA5
            (27 validation windows in a quiet spell of March 2019) the two-sided fit shrank the 24 h band to 0.3x
            and the test coverage fell to 0.77; widening only gives 0.89 and a lower CRPS, and changes nothing on
            traffic and Hangzhou metro, whose fits all widen (docs/probabilistic.md). Ensemble spreads are always
            fitted both ways: MC dropout's spread is not fitted to the training data, so it has no such bias.
    """

    def __init__(
        self,
        model: nn.Module,
        scaler: StandardScaler,
        horizon: int,
        loss: str = "mae",
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        mape_min_abs: float = 0.0,
        metrics: Callable[..., Any] | None = None,
        loss_weights: torch.Tensor | None = None,
        calibrate_bands: bool = True,
        narrow_bands: bool = False,
    ):
        super().__init__()
        self.model = model
        self.loss_name = loss
        self.loss_fn = masked_loss(loss)
        levels = getattr(model, "quantile_levels", None)
        self.quantile_levels = None if levels is None else levels.detach().clone()
        if self.quantile_levels is not None and loss != "mae":
            raise ValueError(f"engine.loss={loss!r} with model.quantiles: quantiles are trained with the pinball loss "
                             "(the quantile form of the MAE); set engine.loss=mae")
        self.optimizer_factory = optimizer or (lambda params: torch.optim.AdamW(params, lr=1e-3))
        self.scheduler_factory = scheduler
        mean, std = scaler.tensors()
        self.register_buffer("scale_mean", mean)
        self.register_buffer("scale_std", std)
        self.metric_factory = partial(metrics or partial(ForecastMetrics, horizon), mape_min_abs=mape_min_abs)
        self.metrics = nn.ModuleDict({p: self.metric_factory() for p in SPLIT_PREFIXES})
        # Data-derived and rebuilt from the data at every start: not part of the checkpoint's state.
        self.register_buffer("loss_weights", loss_weights, persistent=False)
        self.calibrate_bands = calibrate_bands
        self.narrow_bands = narrow_bands
        if self.band_scale is not None:
            self.band_calibration = self.band_scale.new_calibration()
        # Filled by the entry point; saved with every checkpoint (config, data spec) so a forecast job can
        # rebuild the model without the original command line.
        self.checkpoint_metadata: dict[str, Any] = {}

    @property
    def band_scale(self):
        """The model's :class:`~stlm.nn.band_scale.BandScale` (quantiles) or
        :class:`~stlm.nn.spread_scale.SpreadScale` (ensembles) when it is to be calibrated here, else None."""
        return getattr(self.model, "band_scale", None) if self.calibrate_bands else None

    @property
    def has_trainable_parameters(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predictions in original units, [B, H, N, C] (quantiles: [B, H, N, C, Q]; ensembles in eval mode:
        [B, H, N, C, M])."""
        return to_original_units(self.model(batch), self.scale_mean, self.scale_std)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self(batch)
        loss = self._loss(pred, batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, global step "
                f"{self.global_step}, batch {batch_idx}: stopping before it reaches the weights. {_FIX}"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch["y"].shape[0])
        return loss

    def _loss(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.quantile_levels is None:
            if pred.dim() == batch["y"].dim() + 1:  # ensemble members (eval mode): the loss of their median
                pred = ensemble_median(pred)
            return self.loss_fn(pred, batch["y"], batch["mask"], self.loss_weights)
        # Pinball loss, averaged over the levels, then the masked (weighted) mean over targets as for the MAE.
        wm = weight_mask(batch["mask"], self.loss_weights)
        target = torch.where(wm > 0, batch["y"], 0.0)
        score = pinball(pred, target, self.quantile_levels.to(pred.device))
        floor = 1.0 if self.loss_weights is None else 1e-12
        return torch.where(wm > 0, score * wm, 0.0).sum() / wm.sum().clamp_min(floor)

    def on_before_optimizer_step(self, optimizer) -> None:
        """A finite loss can still give inf/NaN gradients (overflow in the backward): refuse to apply them."""
        for name, p in self.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise NonFiniteLossError(
                    f"non-finite gradient of {name} at epoch {self.current_epoch}, global step {self.global_step}: "
                    f"stopping before it reaches the weights. {_FIX}"
                )

    def _evaluate(self, batch: dict[str, torch.Tensor], prefix: str) -> None:
        pred = self(batch)
        if not torch.isfinite(pred).all():
            raise NonFiniteLossError(
                f"non-finite predictions in {prefix} at epoch {self.current_epoch} (the weights or the inputs hold "
                f"inf/NaN); no metric or checkpoint is written from them. {_FIX}"
            )
        _update_metric(self.metrics[prefix], pred, batch)
        if prefix == "val" and self.band_scale is not None:
            self.band_calibration.update(pred, batch["y"], weight_mask(batch["mask"], self.loss_weights))
        loss = self._loss(pred, batch)
        # sync_dist: averaged over ranks, like the metrics (torchmetrics), so every DDP rank reports the same value
        self.log(f"{prefix}/loss", loss, on_epoch=True, batch_size=batch["y"].shape[0], sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch)

    def _eval_pass(self, dataloader):
        """``(batch, predictions)`` of one eval-mode pass over ``dataloader`` in this process (batches on this
        device); the training mode is restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            for batch in dataloader:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                yield batch, self(batch)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def evaluate(self, dataloader) -> dict[str, float]:
        """Metrics of one pass over ``dataloader`` in this process, without a Trainer (no distributed setup):
        ``{"mae_h1": ..., "mae_avg": ...}``."""
        metric = self.metric_factory(sync_on_compute=False).to(self.device)
        for batch, pred in self._eval_pass(dataloader):
            _update_metric(metric, pred, batch)
        return {k: float(v) for k, v in metric.compute().items()}

    @torch.no_grad()
    def calibrate(self, dataloader) -> None:
        """Fit the band scale on one pass over ``dataloader`` (the validation split) in this process, as a
        validation pass does; nothing happens for point models or with ``calibrate_bands=false``."""
        if self.band_scale is None:
            return
        calibration = self.band_scale.new_calibration(sync_on_compute=False).to(self.device)
        for batch, pred in self._eval_pass(dataloader):
            calibration.update(pred, batch["y"], weight_mask(batch["mask"], self.loss_weights))
        self._refit_band_scale(calibration)

    def _refit_band_scale(self, calibration) -> None:
        """Multiply the band scale by the factors the accumulated statistics ask for (they were measured on
        predictions made with the current scale), then start a new accumulation. The product is kept inside
        the calibration's factor bounds too, so no run of refits can compound a band past them."""
        factors = calibration.compute().to(self.band_scale.scale)
        low, high = calibration.bounds
        if not self.narrow_bands and self.band_scale.fitted_on_training:
            low = max(low, 1.0)  # the product is the band relative to the head's own: never narrower
        self.band_scale.scale.copy_((self.band_scale.scale * factors).clamp(low, high))
        calibration.reset()

    def _log_epoch_metrics(self, prefix: str) -> None:
        values = self.metrics[prefix].compute()  # already reduced over ranks (torchmetrics states)
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items() if k != "mae_avg"})
        self.log(f"{prefix}/mae_avg", values["mae_avg"], prog_bar=True)
        self.metrics[prefix].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")
        if self.band_scale is not None:
            self._refit_band_scale(self.band_calibration)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["stlm"] = self.checkpoint_metadata

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint_metadata = checkpoint.get("stlm", {})
