"""STLM on a lat-lon grid: cells grouped into non-overlapping p x p patches, one token per patch.

    batch["x"], batch["x_mask"]   [B, T, N = H * W, C]   (cells latitude-major, stlm.data.sources.geometry)
    batch["x_time"], ["y_time"]   [B, T, K], [B, Hz, K]  (the calendar: slot, day of week, day of year, month)
    returns                       [B, Hz, N, C]          scaled predictions ([B, Hz, N, C, Q] with quantiles)

Per cell the model builds features ``F``: the scaled value and its departure from the training climatology
(both 0 where missing), the static features of the cell (sin/cos latitude and longitude, land-sea mask) and
sin/cos of the day of year. :func:`patchify` packs each p x p block of cells into one token of ``p * p * F``
channels (the grid is padded with missing cells to a multiple of p), an :class:`STLMForecaster` built for
``P = ceil(H / p) * ceil(W / p)`` tokens mixes them (selective SSM over time, attention over patches, the
time-of-day embedding), and :func:`unpatchify` maps its per-token output back to the cells. The forecast is

    y[h] = clim(target time h) + sum_k beta[h, k] * a_k[h] + gate * network output[h]

the grid's seasonal prior, plus a per-lead linear combination of *anomaly terms* ``a_k`` (departures from the
training climatology read from the input window, ``anomaly_terms``):

* ``last``: the cell's last observed anomaly (damped persistence of the current state);
* ``same_hour``: the cell's anomaly at the target's time of day one day (or k days) earlier, inside the window
  (persistence of the day's anomaly pattern: a warm spell, a larger or smaller diurnal cycle than the
  climatology's; 0 for leads whose same hour lies before the window);
* ``window_mean``: the mean observed anomaly over the window (persistence of the level).

``beta`` [H, K, C] is fitted by latitude-weighted, non-negative least squares on the training windows; with
``learn_anomaly`` it is then trained with the network, else it stays as fitted (a buffer). The network output
enters through a gate that starts at 0 (as in ReZero), so training starts from that reference and the network
adds only what lowers the loss. With ``anomaly_fit = "val"`` a second set of weights, ``beta_val``, is fitted the
same way on the validation windows (the most recent period before the test period) and replaces ``beta`` in
evaluation and forecasting: the network learns the residual of the anomaly terms on the training period, and the
per-lead blend of the terms is the one chosen on validation. That is for a training period that is a poor guide
to what follows (one month of ERA5 in spring: docs/climate.md). The anomaly
terms carry every cell's own state straight to the output, which a patch token of ``d_model`` numbers cannot
hold exactly for p * p cells; the network learns what moves and changes.
``patch = 1`` makes every cell a token. Composition, not modification: the forecaster is used as it is.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn

from stlm.data.spec import DataSpec
from stlm.models.baselines import last_observed
from stlm.models.forecaster import STLMForecaster

ANOMALY_TERMS = ("last", "same_hour", "window_mean")
ANOMALY_FIT_SPLITS = ("train", "val")


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


def _nnls_small(G: torch.Tensor, r: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """argmin_{c >= 0} yy - 2 c.r + c.G.c for a few unknowns (K <= 3): the best of every active set.

    ``G`` [K, K], ``r`` [K] (float64). Collinear terms (``same_hour`` equals ``last`` at a lead of one day)
    get a tiny ridge, so the solve never fails and the weight is shared.
    """
    K = r.numel()
    ridge = 1e-9 * (G.diagonal().sum() / K).clamp_min(1e-12)
    best, best_loss = torch.zeros_like(r), yy
    for size in range(1, K + 1):
        for subset in itertools.combinations(range(K), size):
            idx = list(subset)
            c = torch.zeros_like(r)
            c[idx] = torch.linalg.solve(G[idx][:, idx] + ridge * torch.eye(size, dtype=G.dtype), r[idx])
            if (c < 0).any():
                continue
            loss = yy - 2 * c @ r + c @ G @ c
            if loss < best_loss:
                best, best_loss = c, loss
    return best


class GridForecaster(nn.Module):
    """STLM over patches of a lat-lon grid (see the module docstring).

    Args:
        spec: the grid's data spec (``grid_shape`` must be set: a climate datamodule).
        patch: side p of the square patches, in cells (``model.patch``).
        seasonal_prior: forecast departures from the training climatology (fitted by ``fit_from_data``).
        anomaly_terms: which anomaly terms enter the forecast linearly (any of ``last``, ``same_hour``,
            ``window_mean``; empty for none).
        anomaly_fit: ``train``, or ``val`` to evaluate and forecast with weights fitted on the validation windows
            (the network still trains with the training-fitted ones).
        learn_anomaly: train the training-fitted weights with the network (else they stay as fitted).
        fit_samples: at most this many evenly spread windows of a split for a fit.
        static_features, time_features: feed the cells' static features and sin/cos day of year.
        **stlm: the :class:`STLMForecaster` hyperparameters (d_model, n_layers, temporal, spatial, ...).
    """

    quantile_head = True  # model.quantiles gives this model Q non-crossing quantiles (stlm.models.build)

    def __init__(
        self,
        spec: DataSpec,
        patch: int = 1,
        seasonal_prior: bool = True,
        anomaly_terms: Sequence[str] = ("last",),
        anomaly_fit: str = "train",
        learn_anomaly: bool = True,
        fit_samples: int = 512,
        static_features: bool = True,
        time_features: bool = True,
        **stlm,
    ):
        super().__init__()
        if spec.grid_shape is None:  # patches need the H x W layout: the one model that requires a lat-lon grid
            raise ValueError(
                "GridForecaster needs a lat-lon grid (spec.grid_shape is None): use it with dataset=climate or "
                "dataset=era5; for sensor networks use model=stlm"
            )
        if not isinstance(patch, int) or patch < 1:
            raise ValueError(f"model.patch must be a positive integer (cells per patch side), got {patch!r}")
        terms = tuple(anomaly_terms or ())
        unknown = [t for t in terms if t not in ANOMALY_TERMS]
        if unknown or len(set(terms)) != len(terms):
            raise ValueError(f"model.anomaly_terms={list(terms)}: each term once, from {list(ANOMALY_TERMS)}")
        if anomaly_fit not in ANOMALY_FIT_SPLITS:
            raise ValueError(f"model.anomaly_fit={anomaly_fit!r}; choose one of {list(ANOMALY_FIT_SPLITS)}")
        self.H, self.W = spec.grid_shape
        self.p, self.C = patch, spec.n_channels
        self.seasonal_prior = seasonal_prior
        self.anomaly_terms, self.anomaly_fit, self.fit_samples = terms, anomaly_fit, fit_samples
        # beta [H, K, C]: 1 for the last anomaly (plain persistence of it) until fit_from_data fits them.
        beta = torch.zeros(spec.horizon, len(terms), self.C)
        if "last" in terms:
            beta[:, terms.index("last")] = 1.0
        if learn_anomaly:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta)
        if anomaly_fit == "val":
            self.register_buffer("beta_val", beta.clone())
        # same_hour: window index of the target's time of day k days earlier (k = ceil(lead / day)); -1 if outside.
        spd, T = max(spec.steps_per_day, 1), spec.window
        lead = torch.arange(1, spec.horizon + 1)
        index = T - 1 + lead - spd * torch.ceil(lead / spd).long()
        self.register_buffer("same_hour_index", torch.where(index >= 0, index, -1), persistent=False)
        self._register_load_state_dict_pre_hook(self._from_alpha)
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
        # Quantiles: the core forecasts only the C forecast channels of each cell (Q values each); the point
        # model keeps its head over all F features, so checkpoints written before quantiles existed still load.
        head_channels = patch * patch * self.C if stlm.get("quantiles") is not None else None
        self.core = STLMForecaster(inner, seasonal_prior=False, head_channels=head_channels, **stlm)

    @property
    def quantile_levels(self) -> torch.Tensor | None:
        """The Q quantile levels of the forecast's last axis, or None for point forecasts."""
        return self.core.quantile_levels

    @property
    def band_scale(self):
        """The core head's :class:`~stlm.nn.band_scale.BandScale` (it scales the band's offsets, which the gate
        leaves alone), or None for point forecasts."""
        return self.core.band_scale

    def _from_alpha(self, state_dict, prefix, *args) -> None:
        """Checkpoints written before the anomaly terms held ``alpha`` [H, C]: the weight of the last anomaly."""
        alpha = state_dict.pop(prefix + "alpha", None)
        if alpha is not None and prefix + "beta" not in state_dict and self.anomaly_terms == ("last",):
            state_dict[prefix + "beta"] = alpha[:, None, :]

    def fit_from_data(self, datamodule) -> None:
        """Take the datamodule's training climatology (lazily computed, original units) as the prior, scaled,
        and fit the anomaly terms' weights on the windows of ``anomaly_fit``."""
        if not self.seasonal_prior:
            return
        clim = torch.as_tensor(datamodule.climatology, dtype=torch.float32)
        mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in (datamodule.scaler.mean, datamodule.scaler.std))
        self.climatology = (clim - mean) / std
        self.clim_column = datamodule.climatology_column
        if self.anomaly_terms:
            self.beta.data.copy_(self._fit_beta(datamodule, "train"))
            if self.anomaly_fit == "val":
                self.beta_val.copy_(self._fit_beta(datamodule, "val"))

    @torch.no_grad()
    def _fit_beta(self, datamodule, split: str) -> torch.Tensor:
        """[H, K, C] non-negative least squares, weighted by cos(latitude), of the anomaly at each lead on the
        anomaly terms, over up to ``fit_samples`` evenly spread windows of ``split``."""
        dataset = datamodule.datasets[split]
        if len(dataset) == 0:
            raise ValueError(f"GridForecaster: the {split} split has no window to fit the anomaly terms on; use a longer period "
                             "or other dataset.split fractions, or model.anomaly_fit=train")
        picks = torch.linspace(0, len(dataset) - 1, min(self.fit_samples, len(dataset))).long().unique().tolist()
        w = torch.cos(torch.deg2rad(torch.as_tensor(datamodule.spec.node_coords[:, 0], dtype=torch.float64)))
        Hz, K, C = self.beta.shape
        batch = max(1, min(8, 4_000_000 // (self.H * self.W * Hz * C * K)))  # windows per read: bounded memory
        G = torch.zeros(Hz, C, K, K, dtype=torch.float64)
        r = torch.zeros(Hz, C, K, dtype=torch.float64)
        yy = torch.zeros(Hz, C, dtype=torch.float64)
        std = torch.as_tensor(datamodule.scaler.std, dtype=torch.float32)
        mean = torch.as_tensor(datamodule.scaler.mean, dtype=torch.float32)
        for i in range(0, len(picks), batch):
            b = dataset.__getitems__(picks[i : i + batch])
            terms = self._terms(b["x"], b["x_mask"], b["x_time"]).double()  # [B, H, N, C, K] scaled
            target = ((b["y"] - mean) / std - self._prior(b["y_time"])).double()  # [B, H, N, C] scaled
            wm = b["mask"].double() * w[None, None, :, None]
            G += torch.einsum("bhnc,bhnck,bhncj->hckj", wm, terms, terms)
            r += torch.einsum("bhnc,bhnck,bhnc->hck", wm, terms, target)
            yy += torch.einsum("bhnc,bhnc->hc", wm, target**2)
        beta = torch.stack([torch.stack([_nnls_small(G[h, c], r[h, c], yy[h, c]) for c in range(C)], -1) for h in range(Hz)])
        return beta.float()  # [H, K, C]

    def _prior(self, time: torch.Tensor) -> torch.Tensor:
        """Scaled climatology at the given calendar [B, S, K] -> [B, S, N, C]."""
        return self.climatology[time[..., self.clim_column]]

    def _terms(self, x: torch.Tensor, m: torch.Tensor, x_time: torch.Tensor) -> torch.Tensor:
        """The anomaly terms [B, H, N, C, K] from the scaled inputs (0 where nothing was observed)."""
        anomaly = (x - self._prior(x_time) if self.seasonal_prior else x) * m
        Hz = self.beta.shape[0]
        terms = []
        for name in self.anomaly_terms:
            if name == "last":
                term = last_observed(anomaly, m)[:, None].expand(-1, Hz, -1, -1)
            elif name == "same_hour":
                idx = self.same_hour_index
                term = anomaly[:, idx.clamp_min(0)] * (idx >= 0).to(x.dtype).view(1, Hz, 1, 1)
            else:  # window_mean
                term = (anomaly.sum(1) / m.sum(1).clamp_min(1.0))[:, None].expand(-1, Hz, -1, -1)
            terms.append(term)
        return torch.stack(terms, dim=-1)

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
        core = self.core(tokens)  # [B, Hz, P, p * p * F], or [B, Hz, P, p * p * C, Q] with quantiles
        levels = self.quantile_levels
        if levels is None:
            out = unpatchify(core, self.p, self.H, self.W)  # [B, Hz, H, W, F]
            out = self.gate * out[..., : self.C].reshape(B, -1, N, C)
            spread = None
        else:  # the gate scales the network's median; the band's offsets around it are not gated
            Q = len(levels)
            out = unpatchify(core.flatten(-2), self.p, self.H, self.W).reshape(B, -1, N, C, Q)
            median = out[..., self.core.head.median]
            spread, out = out - median.unsqueeze(-1), self.gate * median
        if self.anomaly_terms:
            beta = self.beta_val if self.anomaly_fit == "val" and not self.training else self.beta
            out = out + torch.einsum("bhnck,hkc->bhnc", self._terms(x, m, batch["x_time"]), beta)
        if self.seasonal_prior:
            out = out + self._prior(batch["y_time"])
        return out if spread is None else out.unsqueeze(-1) + spread
