"""Graph WaveNet: shapes, causality, gradients, graph handling, node-permutation equivariance, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stlm.data.spec import DataSpec
from stlm.models.build import build_model
from stlm.models.graph_wavenet import GraphWaveNet, transition_matrix

SMALL = dict(residual_channels=8, dilation_channels=8, skip_channels=16, end_channels=16)


def _adjacency(n: int, seed: int = 0) -> np.ndarray:
    """A directed random graph with weights in (0, 1] and self loops (as DCRNN adjacencies have)."""
    rng = np.random.default_rng(seed)
    adj = (rng.random((n, n)) < 0.3) * rng.uniform(0.1, 1.0, (n, n))
    np.fill_diagonal(adj, 1.0)
    return adj.astype(np.float32)


def _spec(n_nodes=5, n_channels=2, window=12, horizon=4, steps_per_day=24, adjacency="random") -> DataSpec:
    adj = _adjacency(n_nodes) if isinstance(adjacency, str) else adjacency
    return DataSpec(n_nodes=n_nodes, n_channels=n_channels, window=window, horizon=horizon,
                    steps_per_day=steps_per_day, days_per_week=7, interval_minutes=60.0, adjacency=adj)


def _batch(spec: DataSpec, B: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (B, spec.window, spec.n_nodes, spec.n_channels)
    mask = (torch.rand(shape, generator=g) > 0.1).float()
    slots = max(spec.steps_per_day, 1)
    slot = torch.randint(0, slots, (B, spec.window), generator=g)
    time = torch.stack([slot, torch.randint(0, 7, (B, spec.window), generator=g)], -1)
    return {"x": torch.randn(shape, generator=g) * mask, "x_mask": mask, "x_time": time}


@pytest.mark.parametrize("window", [12, 7, 1])
@pytest.mark.parametrize("adjacency", ["random", None])
def test_output_shape_for_any_window_up_to_the_receptive_field(window, adjacency):
    spec = _spec(window=window, adjacency=adjacency)
    model = GraphWaveNet(spec, **SMALL)
    assert model.receptive_field == 13
    out = model(_batch(spec))
    assert out.shape == (3, spec.horizon, spec.n_nodes, spec.n_channels) and torch.isfinite(out).all()
    assert [s.shape[0] for s in model.hidden_states(_batch(spec))[0]] == [12, 10, 9, 7, 6, 4, 3]


def test_a_window_longer_than_the_receptive_field_names_the_fix():
    with pytest.raises(ValueError, match=r"window=24 .* receptive field \(13 steps.*model.blocks=8"):
        GraphWaveNet(_spec(window=24), **SMALL)
    model = GraphWaveNet(_spec(window=24), blocks=8, **SMALL)  # receptive field 25
    assert model(_batch(_spec(window=24))).shape == (3, 4, 5, 2)


def test_hidden_states_are_causal_in_time_and_the_output_reads_the_last_step():
    spec = _spec(window=12)
    model = GraphWaveNet(spec, **SMALL).eval()  # eval: batch norm is a per-channel affine map (no mixing of steps)
    batch = _batch(spec)
    t0 = spec.window - 3
    perturbed = {k: v.clone() for k, v in batch.items()}
    perturbed["x"][:, t0] += 1.0
    perturbed["x_mask"][:, t0] = 1.0 - perturbed["x_mask"][:, t0]
    perturbed["x_time"][:, t0, 0] = (perturbed["x_time"][:, t0, 0] + 5) % spec.steps_per_day
    with torch.no_grad():
        (states, _), (states_p, _) = model.hidden_states(batch), model.hidden_states(perturbed)
    for h, h_p in zip(states, states_p):
        first_affected = h.shape[0] - spec.window + t0  # state i holds the last L_i steps of the window
        if first_affected > 0:
            assert torch.equal(h[:first_affected], h_p[:first_affected])
        assert not torch.allclose(h[max(first_affected, 0):], h_p[max(first_affected, 0):])
    last = {k: v.clone() for k, v in batch.items()}
    last["x"][:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(batch), model(last))


@pytest.mark.parametrize("adjacency", ["random", None])
def test_every_parameter_gets_a_gradient(adjacency):
    spec = _spec(adjacency=adjacency)
    model = GraphWaveNet(spec, **SMALL).train()
    model(_batch(spec)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert ("fixed_hops" in model.state_dict()) == (adjacency is not None)


def test_the_graph_options():
    spec = _spec()
    given_only = GraphWaveNet(spec, adaptive_adjacency=False, **SMALL)
    assert not any("embeddings" in name for name, _ in given_only.named_parameters())
    assert len(given_only.hop_matrices()) == 4  # P_f, P_f^2, P_b, P_b^2
    assert len(GraphWaveNet(spec, **SMALL).hop_matrices()) == 6
    assert torch.isfinite(given_only(_batch(spec))).all()
    with pytest.raises(ValueError, match="no graph to diffuse over.*adaptive_adjacency=true"):
        GraphWaveNet(_spec(adjacency=None), adaptive_adjacency=False, **SMALL)
    with pytest.raises(ValueError, match=r"spec.adjacency must be .*\[5, 5\].*got shape \(4, 4\)"):
        GraphWaveNet(_spec(adjacency=np.ones((4, 4), np.float32)), **SMALL)
    with pytest.raises(ValueError, match="any negative: True"):
        GraphWaveNet(_spec(adjacency=-np.ones((5, 5), np.float32)), **SMALL)


def test_transition_matrices_follow_the_edges_from_row_to_column():
    adj = np.zeros((3, 3), np.float32)
    adj[0, 1], adj[0, 2] = 1.0, 3.0  # node 0 feeds nodes 1 and 2; nodes 1 and 2 have no out-edges
    P = transition_matrix(torch.from_numpy(adj))
    assert torch.allclose(P, torch.tensor([[0.0, 0.25, 0.75], [0, 0, 0], [0, 0, 0]]))
    model = GraphWaveNet(_spec(n_nodes=3, adjacency=adj), diffusion_steps=2, **SMALL)
    forward_hop, forward_hop2, backward_hop = model.fixed_hops[0], model.fixed_hops[1], model.fixed_hops[2]
    # Row w of a hop matrix gathers from the nodes w receives from: downstream nodes read node 0 ...
    assert forward_hop[1, 0] == 0.25 and forward_hop[2, 0] == 0.75 and forward_hop[0].abs().sum() == 0
    assert forward_hop2.abs().sum() == 0  # no path of length 2
    # ... and in the backward direction node 0 reads its downstream nodes (row-normalized over A^T).
    assert backward_hop[0, 1] == 1.0 and backward_hop[0, 2] == 1.0


def test_inputs_are_values_flags_and_time_of_day():
    spec = _spec(window=7)
    model = GraphWaveNet(spec, **SMALL)
    batch = _batch(spec)
    feats = model.inputs(batch)  # [13, N, B, 2C + 1], the window in the last 7 steps
    assert feats.shape == (13, spec.n_nodes, 3, 2 * spec.n_channels + 1)
    assert feats[:6].abs().sum() == 0  # padding: no values, flags 0 ("not observed")
    assert torch.equal(feats[6:, :, :, :2], batch["x"].permute(1, 2, 0, 3))
    assert torch.equal(feats[6:, :, :, 2:4], batch["x_mask"].permute(1, 2, 0, 3))
    assert torch.allclose(feats[6:, 0, :, 4], batch["x_time"][..., 0].T.float() / spec.steps_per_day)
    no_calendar = _spec(window=7, steps_per_day=0)
    assert GraphWaveNet(no_calendar, **SMALL).inputs(_batch(no_calendar))[..., 4].abs().sum() == 0


def test_node_permutation_equivariance_with_the_graph_and_embeddings_permuted():
    spec = _spec(n_nodes=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    adj_p = spec.adjacency[perm][:, perm]
    spec_p = DataSpec(**{**spec.__dict__, "adjacency": adj_p})
    model = GraphWaveNet(spec, **SMALL).eval()
    model_p = GraphWaveNet(spec_p, **SMALL).eval()
    state = model.state_dict()
    for key in ("source_embeddings", "target_embeddings"):
        state[key] = state[key][perm]
    assert torch.allclose(model_p.fixed_hops, state["fixed_hops"][:, perm][:, :, perm])
    state["fixed_hops"] = model_p.fixed_hops
    model_p.load_state_dict(state)
    batch = _batch(spec)
    batch_p = {**batch, "x": batch["x"][:, :, perm], "x_mask": batch["x_mask"][:, :, perm]}
    with torch.no_grad():
        out, out_p = model(batch), model_p(batch_p)
    assert torch.allclose(out_p, out[:, :, perm], atol=1e-5)
    assert not torch.allclose(out_p, out, atol=1e-3)  # the nodes do differ, so the check above has teeth


def test_rejects_a_batch_of_the_wrong_shape():
    spec = _spec()
    batch = _batch(_spec(n_nodes=4))
    with pytest.raises(ValueError, match=r"batch\['x'\] must be \[B, T, N=5, C=2\], got \(3, 12, 4, 2\)"):
        GraphWaveNet(spec, **SMALL)(batch)


def test_the_config_builds_the_model(compose_train):
    cfg = compose_train(["model=graph_wavenet", "model.residual_channels=8", "model.dilation_channels=8"])
    assert cfg.model._target_ == "stlm.models.graph_wavenet.GraphWaveNet"
    spec = _spec(n_nodes=4, n_channels=1, horizon=12)
    model = build_model(cfg.model, spec)
    assert isinstance(model, GraphWaveNet) and model.start.out_features == 8 and model.end_hidden.out_features == 512
    assert model(_batch(spec)).shape == (3, 12, 4, 1)
