"""Graph WaveNet (Wu et al., IJCAI 2019, "Graph WaveNet for Deep Spatial-Temporal Graph Modeling"), a baseline.

    batch["x"], batch["x_mask"]  [B, T, N, C]   scaled inputs (0 where missing), 1 = observed
    batch["x_time"]              [B, T, 2]      (time-of-day slot, day of week)
    returns                      [B, H, N, C]   scaled predictions, all horizons at once

Follows the official code (github.com/nnzhan/Graph-WaveNet, ``model.py``): a 1x1 start convolution, then
``blocks x layers`` layers with dilations 1, 2, .., 2^(layers-1) in every block, each

    gated dilated causal convolution   z  = tanh(W_f * h) . sigmoid(W_g * h)           (kernel 2)
    skip                               s += W_s z                                       (at the last step)
    diffusion convolution (eq. 7)      h' = z W_0 + sum_{k=1..K} sum_P  P^k' z W_{P,k}   (K = 2 hops)
    residual + batch norm              h  = BN(h' + h)

and ``relu -> 1x1 -> relu -> 1x1`` end convolutions from the summed skips to ``H * C`` outputs. The supports P
are the forward and backward transition matrices of the given adjacency A (row = from, column = to),
``P_f = D_out^-1 A`` and ``P_b = D_in^-1 A^T``, and the self-adaptive adjacency ``softmax(relu(E_1 E_2^T))``
(row-wise softmax over learned node embeddings of dimension 10). ``P' z`` sums over the *from* node,
``(P' z)[w] = sum_v P[v, w] z[v]``: a node receives from its upstream neighbours, as the official
``einsum('ncvl,vw->ncwl')``. Without an adjacency only the adaptive support is used (the paper's
"adaptive-only" variant).

Inputs per node and step: as in the official code the values and the time of day (fraction of the day, zeros
when ``spec.steps_per_day == 0``), plus the observation flags, so a zero-filled gap is told from a zero reading.

Time: the convolutions are unpadded, so each layer shortens the sequence by ``(kernel - 1) * dilation``. The
window is left-padded with zeros (flags 0, "not observed") to the receptive field ``1 + blocks * (kernel - 1)
* (2^layers - 1)`` (13 for 4 x 2, kernel 2), as the official code does, so the last layer has exactly one step,
the forecast origin, whose receptive field is the whole window: any window from 1 step up to the receptive
field works. A longer window is rejected at construction (its oldest steps would be silently ignored).

Normalization: batch norm over (nodes, batch, time) per channel, as in the paper and the official code. With
64 x 200 nodes x ~6 steps per batch its statistics are well estimated, and at inference it is a per-channel
affine map. In training mode its statistics mix time steps, so the hidden states are causal in time only in
eval mode; that leaks nothing into forecasts, since the whole window is past data.

Internal layout is time-first, ``[L, N, B, channels]``: the shifted time slices of a causal convolution
are contiguous views, channel mixing is a ``Linear`` on the last axis, and one diffusion hop of every step is
one batched ``[N, N] @ [N, B * channels]`` matmul. (A first version in the official channels-first layout
spent more time in its ``Conv2d``s with (1, 2) kernels than in the diffusion matmuls on a 2-core CPU.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlm.data.spec import DataSpec


def transition_matrix(adjacency: torch.Tensor) -> torch.Tensor:
    """Random-walk matrix ``D^-1 A`` [N, N] (rows sum to 1); a node without out-edges gets a zero row."""
    degree = adjacency.sum(dim=1, keepdim=True)
    return torch.where(degree > 0, adjacency / degree.clamp_min(1e-12), torch.zeros_like(adjacency))


class DilatedCausalConv(nn.Module):
    """``h [L, N, B, c_in] -> [L - (kernel - 1) * dilation, N, B, c_out]``, a Conv2d with kernel (1, kernel):
    ``out[t] = b + sum_j W_j h[t + j * dilation]``; output step t sits at input step ``t + (kernel - 1) * dilation``.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        bound = 1 / math.sqrt(c_in * kernel_size)  # Conv2d's default initialization (fan_in = c_in * kernel)
        self.weight = nn.Parameter(torch.empty(kernel_size, c_out, c_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(c_out).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        L_out = h.shape[0] - (self.weight.shape[0] - 1) * self.dilation
        out = F.linear(h[:L_out], self.weight[0], self.bias)
        for j in range(1, self.weight.shape[0]):
            out = out + F.linear(h[j * self.dilation : j * self.dilation + L_out], self.weight[j])
        return out


class DiffusionConv(nn.Module):
    """Eq. 7 of the paper: ``z [L, N, B, c_in] -> [L, N, B, c_out] = z W_0 + b + sum_k M_k (z W_k)``, then dropout.

    ``M_k`` [N, N] are the hop matrices, transposed: ``M_k = (P^k)^T`` for every support P and hop k, so row w
    of ``M_k @ y`` gathers from the nodes w receives from. Mixing channels before diffusing (the order of eq. 7)
    keeps each hop one batched matmul, with no concatenation of hops.
    """

    def __init__(self, c_in: int, c_out: int, n_hops: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)  # a module, so MC dropout (stlm.models.ensemble) can switch it on
        self.identity = nn.Linear(c_in, c_out)  # W_0 and the bias
        self.hops = nn.ModuleList(nn.Linear(c_in, c_out, bias=False) for _ in range(n_hops))  # W_1 .. W_n

    def forward(self, z: torch.Tensor, hop_matrices: list[torch.Tensor]) -> torch.Tensor:
        assert len(hop_matrices) == len(self.hops), (len(hop_matrices), len(self.hops))
        out = self.identity(z)
        L, N, B, _ = out.shape
        for M, W in zip(hop_matrices, self.hops):
            out = out + (M @ W(z).view(L, N, -1)).view(out.shape)  # M broadcast over the L steps
        return self.dropout(out)


class GraphWaveNet(nn.Module):
    """Graph WaveNet forecaster.

    The defaults are the paper's except the residual and dilation widths (32 there): the diffusion matmuls,
    whose cost grows with ``N^2 x batch x residual_channels``, dominate a step on a CPU (see
    ``conf/model/graph_wavenet.yaml``).

    Args:
        spec: sizes from the data; ``spec.adjacency`` [N, N] (row = from, column = to) or None.
        residual_channels: width of the residual stream (and of the diffusion convolution output).
        dilation_channels: width of the gated temporal convolution output.
        skip_channels: width of the summed skip connections.
        end_channels: hidden width of the end convolutions.
        blocks, layers: ``blocks`` repetitions of ``layers`` layers with dilations 1, 2, 4, ...
        kernel_size: temporal kernel size.
        diffusion_steps: K, the number of hops per support.
        embedding_dim: dimension of the node embeddings E_1, E_2 of the adaptive adjacency.
        adaptive_adjacency: learn the self-adaptive adjacency (required when ``spec.adjacency`` is None).
        dropout: dropout on each diffusion convolution's output.
    """

    def __init__(
        self,
        spec: DataSpec,
        residual_channels: int = 12,
        dilation_channels: int = 12,
        skip_channels: int = 256,
        end_channels: int = 512,
        blocks: int = 4,
        layers: int = 2,
        kernel_size: int = 2,
        diffusion_steps: int = 2,
        embedding_dim: int = 10,
        adaptive_adjacency: bool = True,
        dropout: float = 0.3,
    ):
        super().__init__()
        if kernel_size < 2 or blocks < 1 or layers < 1 or diffusion_steps < 1 or embedding_dim < 1:
            raise ValueError(
                "GraphWaveNet: need kernel_size >= 2 and blocks, layers, diffusion_steps, embedding_dim >= 1; got "
                f"kernel_size={kernel_size}, blocks={blocks}, layers={layers}, diffusion_steps={diffusion_steps}, "
                f"embedding_dim={embedding_dim}"
            )
        self.n_nodes, self.n_channels, self.horizon = spec.n_nodes, spec.n_channels, spec.horizon
        self.steps_per_day, self.diffusion_steps = spec.steps_per_day, diffusion_steps
        self.dilations = [2**i for _ in range(blocks) for i in range(layers)]
        self.receptive_field = 1 + (kernel_size - 1) * sum(self.dilations)
        if spec.window > self.receptive_field:
            needed = math.ceil((spec.window - 1) / ((kernel_size - 1) * (2**layers - 1)))
            raise ValueError(
                f"GraphWaveNet: window={spec.window} is longer than the receptive field ({self.receptive_field} steps "
                f"with blocks={blocks}, layers={layers}, kernel_size={kernel_size}), so its oldest steps would be "
                f"ignored. Set model.blocks={needed} (or more model.layers), or shorten dataset.window"
            )

        n_supports = 0
        if spec.adjacency is not None:
            A = self._checked_adjacency(spec.adjacency, spec.n_nodes)
            powers = self._powers(transition_matrix(A)) + self._powers(transition_matrix(A.T))
            # (P^k)^T of P_f then P_b, [2K, N, N]; persistent, so a checkpoint carries the graph it was trained on.
            self.register_buffer("fixed_hops", torch.stack([P.T for P in powers]).contiguous())
            n_supports += 2
        else:
            self.fixed_hops = None
        self.adaptive_adjacency = adaptive_adjacency
        if adaptive_adjacency:
            self.source_embeddings = nn.Parameter(torch.randn(spec.n_nodes, embedding_dim))  # E_1
            self.target_embeddings = nn.Parameter(torch.randn(spec.n_nodes, embedding_dim))  # E_2
            n_supports += 1
        if n_supports == 0:
            raise ValueError(
                "GraphWaveNet: no graph to diffuse over: spec.adjacency is None and adaptive_adjacency=false. "
                "Set model.adaptive_adjacency=true or use a dataset with an adjacency"
            )

        self.start = nn.Linear(2 * spec.n_channels + 1, residual_channels)  # values, flags, time of day
        # Filter and gate convolutions as one convolution with twice the outputs, split in forward.
        self.temporal = nn.ModuleList(
            DilatedCausalConv(residual_channels, 2 * dilation_channels, kernel_size, d) for d in self.dilations
        )
        self.skip = nn.ModuleList(nn.Linear(dilation_channels, skip_channels) for _ in self.dilations)
        # The last layer feeds only its skip: the official code also builds its diffusion convolution and batch
        # norm, but their output is never used (their parameters never train), so they are left out here.
        self.graph = nn.ModuleList(
            DiffusionConv(dilation_channels, residual_channels, n_supports * diffusion_steps, dropout)
            for _ in self.dilations[:-1]
        )
        self.norm = nn.ModuleList(nn.BatchNorm1d(residual_channels) for _ in self.dilations[:-1])
        self.end_hidden = nn.Linear(skip_channels, end_channels)
        self.end_out = nn.Linear(end_channels, spec.horizon * spec.n_channels)

    @staticmethod
    def _checked_adjacency(adjacency, n_nodes: int) -> torch.Tensor:
        A = torch.as_tensor(np.asarray(adjacency, dtype=np.float32))
        if A.shape != (n_nodes, n_nodes) or not torch.isfinite(A).all() or (A < 0).any():
            raise ValueError(
                f"GraphWaveNet: spec.adjacency must be a finite, non-negative [{n_nodes}, {n_nodes}] matrix "
                f"(row = from, column = to); got shape {tuple(A.shape)}, all finite: {bool(torch.isfinite(A).all())}, "
                f"any negative: {bool((A < 0).any())}. Check the dataset's adjacency file"
            )
        return A

    def _powers(self, P: torch.Tensor) -> list[torch.Tensor]:
        """``[P, P^2, ..., P^K]``: hop k of the diffusion multiplies by ``P^k`` (the official code iterates)."""
        out = [P]
        for _ in range(self.diffusion_steps - 1):
            out.append(out[-1] @ P)
        return out

    def adaptive_adjacency_matrix(self) -> torch.Tensor:
        """``softmax(relu(E_1 E_2^T))`` [N, N], normalized over each row (row = from)."""
        return F.softmax(F.relu(self.source_embeddings @ self.target_embeddings.T), dim=1)

    def hop_matrices(self) -> list[torch.Tensor]:
        """``(P^k)^T`` [N, N] for every support and hop: the given graph's (constant), then the adaptive one's."""
        hops = [] if self.fixed_hops is None else list(self.fixed_hops.unbind(0))
        if self.adaptive_adjacency:
            hops += [P.T for P in self._powers(self.adaptive_adjacency_matrix())]
        return hops

    def inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch -> time-first input features [receptive_field, N, B, 2C + 1], zero-padded at the start (past)."""
        x, mask, calendar = batch["x"], batch["x_mask"], batch["x_time"]
        if x.dim() != 4 or x.shape[2] != self.n_nodes or x.shape[3] != self.n_channels:
            raise ValueError(
                f"GraphWaveNet: batch['x'] must be [B, T, N={self.n_nodes}, C={self.n_channels}], got {tuple(x.shape)}"
            )
        B, T, N, _ = x.shape
        if T > self.receptive_field:
            raise ValueError(
                f"GraphWaveNet: batch['x'] has {T} steps, more than the receptive field ({self.receptive_field}); "
                "build the model with the data's window"
            )
        if self.steps_per_day > 0:
            day_fraction = calendar[..., 0].to(x.dtype) / self.steps_per_day  # [B, T]
        else:
            day_fraction = x.new_zeros(B, T)
        day_fraction = day_fraction.T[:, None, :, None].expand(T, N, B, 1)
        features = [x.permute(1, 2, 0, 3), mask.permute(1, 2, 0, 3), day_fraction]
        return F.pad(torch.cat(features, dim=-1), (0, 0, 0, 0, 0, 0, self.receptive_field - T, 0))

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Residual stream after each layer but the last, ``[L_i, N, B, residual_channels]`` aligned with the
        *last* L_i steps of the padded window; and the summed skips ``[N, B, skip_channels]`` at the forecast
        origin (the last step)."""
        h = self.start(self.inputs(batch))
        hop_matrices = self.hop_matrices()
        states, skip = [], 0
        for i, (temporal, skip_conv) in enumerate(zip(self.temporal, self.skip)):
            filt, gate = temporal(h).chunk(2, dim=-1)
            z = torch.tanh(filt) * torch.sigmoid(gate)  # [L - (kernel - 1) * dilation, N, B, dilation_channels]
            # Only the last step's skips reach the output (the official code crops them to it at the end).
            skip = skip + skip_conv(z[-1])
            if i < len(self.graph):
                h = self.graph[i](z, hop_matrices) + h[-z.shape[0] :]
                h = self.norm[i](h.reshape(-1, h.shape[-1])).view(h.shape)
                states.append(h)
        return states, skip

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        _, skip = self.hidden_states(batch)
        out = self.end_out(F.relu(self.end_hidden(F.relu(skip))))  # [N, B, H * C]
        N, B, _ = out.shape
        return out.view(N, B, self.horizon, self.n_channels).permute(1, 2, 0, 3)
