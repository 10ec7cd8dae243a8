"""The STLM forecaster: embedding -> L x STBlock(temporal SSM | spatial attention | MLP) -> horizon head.

    batch["x"], batch["x_mask"]  [B, T, N, C]
    batch["x_time"]              [B, T, 2]      (batch["y_time"] [B, H, 2] with the seasonal prior)
    returns                      [B, H, N, C] scaled predictions

With ``seasonal_prior=True`` (:mod:`stlm.models.seasonal_prior`) the network forecasts departures from each
node's seasonal training profile, fitted by ``fit_from_data``.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.data.spec import DataSpec
from stlm.models.seasonal_prior import SeasonalPrior
from stlm.nn.block import MixerFactory, STBlock
from stlm.nn.embeddings import SpatioTemporalEmbedding
from stlm.nn.heads import ForecastHead


class STLMForecaster(nn.Module):
    """Selective SSM over time and global attention over space, stacked ``n_layers`` times.

    Args:
        spec: sizes from the data (nodes, channels, window, horizon, calendar).
        d_model: width of every token's hidden state.
        n_layers: number of STBlocks.
        temporal, spatial: mixer factories ``f(d_model=...)`` (``_partial_`` configs); None drops the mixer.
        mlp_ratio: hidden width of each block's MLP relative to d_model.
        dropout: dropout on the embedding and on every residual branch.
        head: ``flatten`` (reads the whole window) or ``last`` (the last step's state).
        kernels: kernel backend of the mixers (``auto``, ``reference``, ``chunked``, ``triton``).
        seasonal_prior: forecast the departure from each node's time-of-week training mean (see above).
    """

    def __init__(
        self,
        spec: DataSpec,
        d_model: int = 32,
        n_layers: int = 1,
        temporal: MixerFactory | None = None,
        spatial: MixerFactory | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        head: str = "flatten",
        kernels: str = "auto",
        seasonal_prior: bool = True,
    ):
        super().__init__()
        self.spec = spec
        self.prior = SeasonalPrior(spec, enabled=seasonal_prior)
        self.embed = SpatioTemporalEmbedding(
            self.prior.n_features, spec.n_nodes, d_model, spec.steps_per_day, spec.days_per_week, dropout
        )
        self.blocks = nn.ModuleList(
            STBlock(d_model, temporal, spatial, mlp_ratio=mlp_ratio, dropout=dropout, kernels=kernels) for _ in range(n_layers)
        )
        self.head = ForecastHead(spec.window, d_model, spec.horizon, spec.n_channels, mode=head)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["x"]
        if x.dim() != 4 or x.shape[2] != self.spec.n_nodes or x.shape[3] != self.spec.n_channels:
            raise ValueError(
                f"STLMForecaster: batch['x'] must be [B, T, N={self.spec.n_nodes}, C={self.spec.n_channels}], "
                f"got {tuple(x.shape)}"
            )
        h = self.embed(self.prior.features(batch), batch["x_time"])
        for block in self.blocks:
            h = block(h)
        return self.prior.add(self.head(h), batch)

    def fit_from_data(self, datamodule) -> None:
        """Fit the seasonal prior on the training period (nothing to do without it)."""
        self.prior.fit_from_data(datamodule)
