"""The STLM forecaster: embedding -> L x STBlock(temporal SSM | spatial attention | MLP) -> horizon head.

    batch["x"], batch["x_mask"]  [B, T, N, C]
    batch["x_time"]              [B, T, 2]      (batch["y_time"] [B, H, 2] with the seasonal prior)
    returns                      [B, H, N, C] scaled predictions ([B, H, N, C, Q] with ``quantiles``)

With ``seasonal_prior=True`` (:mod:`stlm.models.seasonal_prior`) the network forecasts departures from each
node's seasonal training profile, fitted by ``fit_from_data``.

Recurrent (streaming) mode, for a temporal mixer with a state (the selective SSM):

    state = model.init_state(batch, n_nodes)
    forecast, state = model.step(x_t, x_time_t, state)     x_t [B, N, C] scaled (NaN = missing), x_time_t [B, 2]

The state holds each block's per-node SSM state and the head's buffer of the last ``head_steps`` normalized
hidden states: its size is fixed, so a step costs the same whatever the history length. Stepping through a
history from ``init_state`` gives the forecast of ``forward`` on that history as one window, for any length.

Time-chunked training (``time_chunk=K``, for long windows with a streaming temporal mixer). The same state makes
the windowed pass exact when run K steps at a time: chunk k runs the embedding and every block on its K steps,
starting from the state chunk k-1 ended with. Under gradients the forward keeps no activations, only the
state at each chunk boundary, and the backward recomputes one chunk at a time (:mod:`stlm.nn.time_chunks`), so
activation memory is one chunk's plus the chunk-boundary states, instead of the whole window's, for one more
forward pass of compute. Outputs and gradients equal the unchunked pass (up to
float rounding; with dropout the random masks differ). Attention over time cannot do this: every query of a
chunk reads the keys of the whole window before it, so there is no fixed-size state to carry.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.data.calendar import future_calendar
from stlm.data.spec import DataSpec
from stlm.metrics.probabilistic import parse_levels
from stlm.models.seasonal_prior import SeasonalPrior
from stlm.nn.block import MixerFactory, STBlock
from stlm.nn.embeddings import SpatioTemporalEmbedding
from stlm.nn.heads import ForecastHead
from stlm.nn.time_chunks import has_active_dropout, run_in_time_chunks


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
        head_steps: how many of the latest hidden states the ``flatten`` head reads (null = the whole window;
            set it for long windows, whose older history the SSM state already summarizes).
        init_weights: a training checkpoint whose network weights this model starts from (fine-tuning; e.g. a
            one-week window from a model trained on 12 steps with the same ``head_steps``). The seasonal prior
            is fitted on this run's data, not copied.
        time_chunk: run windows longer than this many steps in time chunks, each recomputed in the backward
            (see the module docstring): activation memory of one chunk instead of the whole window, same
            results. None = off. Needs a temporal mixer with a recurrent state (the selective SSM).
        quantiles: quantile levels (``model.quantiles``: null = point forecasts, ``default`` = 0.05 .. 0.95, or a
            list): the head forecasts Q non-crossing quantiles per target (:mod:`stlm.nn.heads`), trained with
            the pinball loss by the engine.
    """

    quantile_head = True  # model.quantiles gives this model Q non-crossing quantiles (stlm.models.build)

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
        head_steps: int | None = None,
        init_weights: str | None = None,
        time_chunk: int | None = None,
        quantiles=None,
        head_channels: int | None = None,
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
        # head_channels: outputs per token when they differ from the inputs' channels (the grid model's patches).
        self.head = ForecastHead(spec.window, d_model, spec.horizon, head_channels or spec.n_channels, mode=head,
                                 steps=head_steps, quantiles=parse_levels(quantiles))
        self.n_slots = max(1, round(24 * 60 / spec.interval_minutes))
        self.init_weights = init_weights
        if time_chunk is not None:
            if isinstance(time_chunk, bool) or not isinstance(time_chunk, int) or time_chunk < 1:
                raise ValueError(f"model.time_chunk must be a positive integer (steps) or null (off), got {time_chunk!r}")
            stateless = [type(b.temporal).__name__ for b in self.blocks if not b.can_stream]
            if stateless:
                raise ValueError(
                    f"model.time_chunk={time_chunk} needs a temporal mixer with a recurrent state to carry from one "
                    f"chunk to the next; {stateless[0]} has none (attention over time reads the whole window). "
                    "Use model/temporal=ssm, or model.time_chunk=null."
                )
        self.time_chunk = time_chunk

    @property
    def quantile_levels(self) -> torch.Tensor | None:
        """The Q quantile levels of the forecast's last axis, or None for point forecasts."""
        return self.head.quantile_levels

    @property
    def band_scale(self):
        """The head's :class:`~stlm.nn.band_scale.BandScale` (fitted on validation by the engine), or None."""
        return self.head.band_scale

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["x"]
        if x.dim() != 4 or x.shape[2] != self.spec.n_nodes or x.shape[3] != self.spec.n_channels:
            raise ValueError(
                f"STLMForecaster: batch['x'] must be [B, T, N={self.spec.n_nodes}, C={self.spec.n_channels}], "
                f"got {tuple(x.shape)}"
            )
        features = self.prior.features(batch)
        if self.time_chunk is not None and x.shape[1] > self.time_chunk:
            return self.prior.add(self.head(self._forward_chunked(features, batch["x_time"])), batch)
        h = self.embed(features, batch["x_time"])
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # Only the steps the head reads leave the last block (exact; see STBlock.forward).
            h = block(h, keep_last=self.head.steps_read if i == last else None)
        return self.prior.add(self.head(h), batch)

    def _forward_chunked(self, features: torch.Tensor, x_time: torch.Tensor) -> torch.Tensor:
        """The last block's output on the steps the head reads, computed ``time_chunk`` steps at a time."""
        return run_in_time_chunks(
            self._chunk, [features, x_time], self.time_chunk, self.head.steps_read,
            params=[p for n, p in self.named_parameters() if not n.startswith("head.")],
            n_states=len(self.blocks), dropout=has_active_dropout(self),
        )

    def _chunk(self, n_kept: int, inputs: list[torch.Tensor], states: list):
        """One time chunk (features, x_time) through the embedding and every block, from the blocks' ``states``
        at its start; returns the last block's last ``n_kept`` steps and the states after the chunk."""
        h = self.embed(*inputs)
        last, new_states = len(self.blocks) - 1, []
        for i, block in enumerate(self.blocks):
            h, state = block(h, state=states[i], return_state=True, keep_last=n_kept if i == last else None)
            new_states.append(state)
        return h, new_states

    # Parameters fitted on this run's data: kept when ``init_weights`` are loaded (stlm.train.job.build_engine).
    fitted_prefixes = ("prior.",)

    def fit_from_data(self, datamodule) -> None:
        """Fit the seasonal prior on the training period (``init_weights`` are loaded after it, by the caller)."""
        self.prior.fit_from_data(datamodule)

    # ----- recurrent mode -------------------------------------------------------------------------------------

    def init_state(self, batch: int, n_nodes: int | None = None, device=None) -> dict[str, torch.Tensor]:
        """The state before the first observation: a flat dict of tensors (saveable with ``torch.save``)."""
        n_nodes = self.spec.n_nodes if n_nodes is None else n_nodes
        if n_nodes != self.spec.n_nodes:
            raise ValueError(f"init_state: the model was built for {self.spec.n_nodes} nodes, got n_nodes={n_nodes}")
        d = self.head.norm.normalized_shape[0]
        state = {"head": torch.zeros(batch, self.head.steps_read, n_nodes, d, device=device)}
        for i, block in enumerate(self.blocks):
            for key, tensor in (block.init_state(batch, n_nodes, device=device) or {}).items():
                state[f"blocks.{i}.{key}"] = tensor
        return state

    def step(
        self,
        x_t: torch.Tensor,
        x_time_t: torch.Tensor,
        state: dict[str, torch.Tensor],
        x_mask_t: torch.Tensor | None = None,
        y_time: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Take one observation and forecast the next ``horizon`` steps.

        Args:
            x_t: [B, N, C] scaled values of this step; NaN marks a missing reading when ``x_mask_t`` is None.
            x_time_t: [B, 2] (time-of-day slot, day of week) of this step.
            state: from :meth:`init_state` or the previous step (not modified).
            x_mask_t: [B, N, C] 1 = observed (default: where x_t is finite).
            y_time: [B, H, 2] calendar of the forecast steps (default: the steps after ``x_time_t``).
        Returns:
            forecast [B, H, N, C] scaled, and the new state.
        """
        if x_mask_t is None:
            x_mask_t = torch.isfinite(x_t).to(x_t.dtype)
        x_t = torch.nan_to_num(x_t) * x_mask_t
        if y_time is None:
            y_time = future_calendar(x_time_t, self.spec.horizon, self.n_slots)
        one = {"x": x_t[:, None], "x_mask": x_mask_t[:, None], "x_time": x_time_t[:, None], "y_time": y_time}
        h = self.embed(self.prior.features(one), one["x_time"])[:, 0]  # [B, N, d]
        new_state = {}
        for i, block in enumerate(self.blocks):
            prefix = f"blocks.{i}."
            block_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or None
            h, block_state = block.step(h, block_state)
            new_state.update({prefix + k: v for k, v in (block_state or {}).items()})
        buffer = torch.cat([state["head"][:, 1:], self.head.norm(h)[:, None]], dim=1)
        new_state["head"] = buffer
        return self.prior.add(self.head.project(buffer), one), new_state
