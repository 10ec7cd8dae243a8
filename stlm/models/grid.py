"""STLM on a lat-lon grid: cells grouped into non-overlapping p x p patches, one token per patch.

    batch["x"], batch["x_mask"]   [B, T, N = H * W, C]   (cells latitude-major, see stlm.data.climate_windows)
    batch["x_time"], ["y_time"]   [B, T, 3], [B, Hz, 3]  (slot, day of week, day of year)
    returns                       [B, Hz, N, C]          scaled predictions

Per cell the model builds features ``F``: the scaled value and its departure from the training climatology
(both 0 where missing), the static features of the cell (sin/cos latitude and longitude, land-sea mask) and
sin/cos of the day of year. :func:`patchify` packs each p x p block of cells into one token of ``p * p * F``
channels (the grid is padded with missing cells to a multiple of p), an :class:`STLMForecaster` built for
``P = ceil(H / p) * ceil(W / p)`` tokens mixes them (selective SSM over time, attention over patches, the
time-of-day embedding), and :func:`unpatchify` maps its per-token output back to the cells. The forecast is

    y[h] = clim(target time h) + alpha[h] * (last observed anomaly of the cell) + network output[h]

the grid's seasonal prior plus a damped persistence of each cell's anomaly (``alpha`` [H, C], learned, starting
from the lat-weighted regression of the anomaly at lead h on the last anomaly over training windows, i.e. the
best damped persistence). The network output enters through a gate that starts at 0 (as in ReZero), so
training starts from that reference and the network adds only what lowers the loss. The persistence term carries every cell's own state straight to the output, which a patch token of
``d_model`` numbers cannot hold exactly for p * p cells; the network learns what moves and changes.
``patch = 1`` makes every cell a token. Composition, not modification: the forecaster is used as it is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stlm.data.spec import DataSpec
from stlm.models.baselines import last_observed
from stlm.models.forecaster import STLMForecaster


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, T, H, W, F] -> [B, T, P, p * p * F] with P = ceil(H/p) * ceil(W/p), zero-padding the grid's edge."""
    B, T, H, W, F = x.shape
    Hp, Wp = math.ceil(H / p), math.ceil(W / p)
    x = nn.functional.pad(x, (0, 0, 0, Wp * p - W, 0, Hp * p - H))
    x = x.view(B, T, Hp, p, Wp, p, F).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(B, T, Hp * Wp, p * p * F)


def unpatchify(tokens: torch.Tensor, p: int, H: int, W: int) -> torch.Tensor:
    """[B, T, P, p * p * F] -> [B, T, H, W, F]: the inverse of :func:`patchify`, padding cut off."""
    B, T, P, D = tokens.shape
    Hp, Wp, F = math.ceil(H / p), math.ceil(W / p), D // (p * p)
    x = tokens.view(B, T, Hp, Wp, p, p, F).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, T, Hp * p, Wp * p, F)
    return x[:, :, :H, :W]


class GridForecaster(nn.Module):
    """STLM over patches of a lat-lon grid (see the module docstring).

    Args:
        spec: the grid's data spec (``grid_shape`` must be set: a climate datamodule).
        patch: side p of the square patches, in cells (``dataset.patch``).
        seasonal_prior: forecast departures from the training climatology (fitted by ``fit_from_data``).
        anomaly_persistence: add ``alpha[h]`` times each cell's last observed departure from it.
        static_features, time_features: feed the cells' static features and sin/cos day of year.
        **stlm: the :class:`STLMForecaster` hyperparameters (d_model, n_layers, temporal, spatial, ...).
    """

    def __init__(
        self,
        spec: DataSpec,
        patch: int = 1,
        seasonal_prior: bool = True,
        anomaly_persistence: bool = True,
        static_features: bool = True,
        time_features: bool = True,
        **stlm,
    ):
        super().__init__()
        if spec.grid_shape is None:
            raise ValueError(
                "GridForecaster needs a lat-lon grid (spec.grid_shape is None): use it with dataset=climate or "
                "dataset=era5; for sensor networks use model=stlm"
            )
        if not isinstance(patch, int) or patch < 1:
            raise ValueError(f"dataset.patch must be a positive integer (cells per patch side), got {patch!r}")
        self.H, self.W = spec.grid_shape
        self.p, self.C = patch, spec.n_channels
        self.seasonal_prior = seasonal_prior
        self.alpha = nn.Parameter(torch.ones(spec.horizon, self.C)) if anomaly_persistence else None
        self.gate = nn.Parameter(torch.zeros(()))
        static = spec.node_features if static_features and spec.node_features is not None else torch.zeros(self.H * self.W, 0)
        self.register_buffer("static", torch.as_tensor(static, dtype=torch.float32))
        self.time_features = time_features and spec.time_features >= 3
        self.n_features = self.C * (2 if seasonal_prior else 1) + self.static.shape[1] + (2 if self.time_features else 0)
        self.n_tokens = math.ceil(self.H / patch) * math.ceil(self.W / patch)
        # Climatology at every (slot or day-of-year) key, scaled: [K, N, C]; filled by fit_from_data.
        self.register_buffer("climatology", torch.zeros(max(spec.steps_per_day, 1), self.H * self.W, self.C))
        self.clim_column = 0
        inner = DataSpec(
            n_nodes=self.n_tokens,
            n_channels=patch * patch * self.n_features,
            window=spec.window,
            horizon=spec.horizon,
            steps_per_day=spec.steps_per_day,
            days_per_week=0,
            interval_minutes=spec.interval_minutes,
        )
        self.core = STLMForecaster(inner, seasonal_prior=False, **stlm)

    def fit_from_data(self, datamodule) -> None:
        """Take the datamodule's training climatology (lazily computed, original units) as the prior, scaled."""
        if not self.seasonal_prior:
            return
        clim = torch.as_tensor(datamodule.climatology, dtype=torch.float32)
        mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in (datamodule.scaler.mean, datamodule.scaler.std))
        self.climatology = (clim - mean) / std
        self.clim_column = datamodule.climatology_column
        if self.alpha is not None:
            self.alpha.data.copy_(self._fit_alpha(datamodule))

    @torch.no_grad()
    def _fit_alpha(self, datamodule, max_samples: int = 32, batch: int = 4) -> torch.Tensor:
        """[H, C] ``sum w a_last a_h / sum w a_last^2`` over up to ``max_samples`` evenly spread training windows."""
        dataset = datamodule.datasets["train"]
        picks = torch.linspace(0, len(dataset) - 1, min(max_samples, len(dataset))).long().unique().tolist()
        w = torch.cos(torch.deg2rad(torch.as_tensor(datamodule.spec.node_coords[:, 0], dtype=torch.float64)))
        num = torch.zeros(self.alpha.shape, dtype=torch.float64)
        den = torch.zeros(self.alpha.shape, dtype=torch.float64)
        std = torch.as_tensor(datamodule.scaler.std, dtype=torch.float32)
        mean = torch.as_tensor(datamodule.scaler.mean, dtype=torch.float32)
        for i in range(0, len(picks), batch):
            b = dataset.__getitems__(picks[i : i + batch])
            last = last_observed(b["x"] - self._prior(b["x_time"]), b["x_mask"]).double()  # [B, N, C] scaled
            seen = b["x_mask"].amax(dim=1).double() * w[None, :, None]
            target = ((b["y"] - mean) / std - self._prior(b["y_time"])).double()  # [B, H, N, C] scaled
            wm = b["mask"].double() * seen[:, None]
            num += (wm * last[:, None] * target).sum(dim=(0, 2))
            den += (wm * last[:, None] ** 2).sum(dim=(0, 2))
        return torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(num)).clamp(0.0, 1.5).float()

    def _prior(self, time: torch.Tensor) -> torch.Tensor:
        """Scaled climatology at the given calendar [B, S, 3] -> [B, S, N, C]."""
        return self.climatology[time[..., self.clim_column]]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x, m = batch["x"], batch["x_mask"]
        B, T, N, C = x.shape
        if N != self.H * self.W or C != self.C:
            raise ValueError(f"GridForecaster: batch['x'] must be [B, T, N={self.H * self.W}, C={self.C}], got {tuple(x.shape)}")
        values, masks = [x * m], [m]
        if self.seasonal_prior:
            values.append((x - self._prior(batch["x_time"])) * m)
            masks.append(m)
        ones = torch.ones(B, T, N, 1, dtype=x.dtype, device=x.device)
        if self.static.shape[1]:
            values.append(self.static.expand(B, T, N, -1))
            masks.append(ones.expand(-1, -1, -1, self.static.shape[1]))
        if self.time_features:
            angle = 2 * math.pi * batch["x_time"][..., 2].to(x.dtype) / 365.25  # [B, T]
            doy = torch.stack([angle.sin(), angle.cos()], dim=-1)[:, :, None].expand(B, T, N, 2)
            values.append(doy)
            masks.append(ones.expand(-1, -1, -1, 2))
        grid = lambda parts: patchify(torch.cat(parts, dim=-1).view(B, T, self.H, self.W, self.n_features), self.p)
        tokens = {"x": grid(values), "x_mask": grid(masks), "x_time": batch["x_time"][..., :2], "y_time": batch["y_time"][..., :2]}
        out = unpatchify(self.core(tokens), self.p, self.H, self.W)  # [B, Hz, H, W, F]
        out = self.gate * out[..., : self.C].reshape(B, -1, N, C)
        if self.alpha is not None:
            anomaly = x - self._prior(batch["x_time"]) if self.seasonal_prior else x
            out = out + self.alpha[None, :, None, :] * last_observed(anomaly, m)[:, None]
        return out + self._prior(batch["y_time"]) if self.seasonal_prior else out
