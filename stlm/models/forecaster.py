"""The STLM forecaster: embedding -> L x STBlock(temporal SSM | spatial attention | MLP) -> horizon head.

    batch["x"], batch["x_mask"]  [B, T, N, C]
    batch["x_time"]              [B, T, 2]
    returns                      [B, H, N, C] scaled predictions
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.data.spec import DataSpec
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
    """

    def __init__(
        self,
        spec: DataSpec,
        d_model: int = 64,
        n_layers: int = 2,
        temporal: MixerFactory | None = None,
        spatial: MixerFactory | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        head: str = "flatten",
        kernels: str = "auto",
    ):
        super().__init__()
        self.spec = spec
        self.embed = SpatioTemporalEmbedding(
            spec.n_channels, spec.n_nodes, d_model, spec.steps_per_day, spec.days_per_week, dropout
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
        h = self.embed(x, batch["x_mask"], batch["x_time"])
        for block in self.blocks:
            h = block(h)
        return self.head(h)
