"""An ensemble forecast from one trained network: members drawn by MC dropout (Gal & Ghahramani 2016).

    batch    the data contract (stlm.data)
    returns  [B, H, N, C]      in training: the wrapped model's point forecast, trained as usual
             [B, H, N, C, M]   in eval mode: M forward passes with the dropout layers left on, spread-calibrated

``model.ensemble=M`` wraps any trained model whose dropout layers (``nn.Dropout``) have ``p > 0``
(``model=stlm model.dropout=0.1``; Graph WaveNet has 0.3 by default). Only the dropout layers are switched to
training mode for the members, so layer statistics (batch norm) and every other eval-mode behaviour stay as
the point model has them. The members' random masks come from a generator seeded by ``seed`` for every call,
so the same batch gives the same ensemble: a forecast job rerun with the same ``batch_size`` writes the same
file. The masks are drawn per batch, so an init time forecast in another batch gets other (equally likely)
members. The members are too narrow as
drawn (dropout spreads by the weights' uncertainty, not the data's noise): ``band_scale``
(:class:`stlm.nn.spread_scale.SpreadScale`) widens them per horizon by the factor of least fair CRPS on the
validation split, which the engine fits as it fits a quantile band.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.nn.spread_scale import SpreadScale


class MCDropoutEnsemble(nn.Module):
    """``model`` forecasting ``members`` ensemble members in eval mode (module docstring).

    Args:
        model: a trained model of the stlm contract with dropout.
        members: M >= 2.
        horizon: H, the forecast steps (of the spread's per-horizon scale).
        seed: seed of the dropout masks of every eval-mode call.
    """

    def __init__(self, model: nn.Module, members: int, horizon: int, seed: int = 0):
        super().__init__()
        if int(members) != members or members < 2:
            raise ValueError(f"model.ensemble={members!r}: give the number of ensemble members, an integer >= 2 "
                             "(e.g. model.ensemble=16), or null for point forecasts")
        self.dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
        if not self.dropouts:
            raise ValueError(
                f"model.ensemble={members}: {type(model).__name__} has no dropout with p > 0, so MC dropout would "
                "draw M identical members; set model.dropout (e.g. model.dropout=0.1, then retrain) or use "
                "model.quantiles=default for bands"
            )
        self.model, self.ensemble_members, self.seed = model, int(members), seed
        self.band_scale = SpreadScale(horizon)  # fitted on validation by the engine

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training:
            return self.model(batch)
        device = batch["x"].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for layer in self.dropouts:
                layer.train()
            try:
                members = torch.stack([self.model(batch) for _ in range(self.ensemble_members)], dim=-1)
            finally:
                for layer in self.dropouts:
                    layer.eval()
        return self.band_scale(members)
