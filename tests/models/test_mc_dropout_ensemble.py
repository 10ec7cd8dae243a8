"""MC dropout ensembles: M members in eval mode from the dropout layers alone, reproducible, the point model in
training, and a clear refusal for a model without dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stlm.models.ensemble import MCDropoutEnsemble


class _Tiny(nn.Module):
    """[B, T, N, C] -> [B, H=3, N, C] through a linear layer with dropout and batch norm (eval statistics)."""

    def __init__(self, p: float):
        super().__init__()
        self.lin, self.drop, self.norm = nn.Linear(4, 3), nn.Dropout(p), nn.BatchNorm1d(3)

    def forward(self, batch):
        x = batch["x"][..., 0].transpose(1, 2)  # [B, N, T]
        B, N, _ = x.shape
        out = self.norm(self.drop(self.lin(x)).reshape(B * N, 3)).reshape(B, N, 3)
        return out.transpose(1, 2).unsqueeze(-1)


def _batch():
    return {"x": torch.randn(5, 4, 6, 1)}


def test_members_in_eval_point_forecast_in_training_and_layers_restored():
    model = MCDropoutEnsemble(_Tiny(0.3), members=7, horizon=3)
    batch = _batch()
    model.train()
    assert model(batch).shape == (5, 3, 6, 1)
    model.eval()
    out = model(batch)
    assert out.shape == (5, 3, 6, 1, 7)
    assert (out.std(-1) > 0).float().mean() > 0.9  # members differ
    assert not model.model.norm.training and not model.model.drop.training  # only switched on inside the call
    mean_before = model.model.norm.running_mean.clone()
    torch.testing.assert_close(model(batch), out)  # seeded: the same batch gives the same ensemble
    assert torch.equal(model.model.norm.running_mean, mean_before)  # batch norm stayed in eval mode


def test_eval_call_leaves_the_global_random_stream_alone():
    model = MCDropoutEnsemble(_Tiny(0.3), members=4, horizon=3).eval()
    batch = _batch()
    state = torch.random.get_rng_state()
    model(batch)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_model_without_dropout_or_too_few_members_is_refused():
    with pytest.raises(ValueError, match="model.dropout"):
        MCDropoutEnsemble(_Tiny(0.0), members=8, horizon=3)
    with pytest.raises(ValueError, match="integer >= 2"):
        MCDropoutEnsemble(_Tiny(0.3), members=1, horizon=3)


def test_builder_wraps_graph_wavenet_and_refuses_stlm_without_dropout():
    from test_graph_wavenet import _batch as gwn_batch, _spec as gwn_spec
    from tiny_runs import compose

    from stlm.models.build import build_model

    spec = gwn_spec()
    gwn = build_model(compose("train", ["model=graph_wavenet", "model.ensemble=5"]).model, spec)
    assert isinstance(gwn, MCDropoutEnsemble)  # Graph WaveNet's diffusion dropout (0.3) draws the members
    out = gwn.eval()(gwn_batch(spec))
    assert out.shape == (3, spec.horizon, spec.n_nodes, spec.n_channels, 5) and (out.std(-1) > 0).any()
    with pytest.raises(ValueError, match=r"model\.ensemble=4: STLMForecaster has no dropout .*model\.dropout=0\.1"):
        build_model(compose("train", ["model.ensemble=4"]).model, spec)  # stlm ships with dropout 0
