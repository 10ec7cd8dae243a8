"""Time-major layouts and group contractions shared by the chunked scan's forward and backward.

The chunked scan works on time-major tensors so that the state of one time step is one contiguous slice:

    per-channel series  u, dt, z, y     [L, batch, d]            (from Mamba's [batch, d, L])
    input/output maps   B, C            [L, batch, g, n]         (g = 1 when B, C are [batch, n, L])
    chunk of states     H, G, a, b      [T, batch, g, d // g, n] (T = chunk length)

Channel ``i`` uses group ``i // (d // g)``, so viewing d as (g, d // g) lines channels up with their group.
"""

from __future__ import annotations

import torch


def time_major(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, d, L] -> contiguous [L, batch, d] in ``dtype``."""
    return x.permute(2, 0, 1).to(dtype).contiguous()


def channel_major(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[L, batch, d] -> contiguous [batch, d, L] in ``dtype`` (inverse of :func:`time_major`)."""
    return x.permute(1, 2, 0).to(dtype).contiguous()


def groups_time_major(BC: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C from [batch, n, L] or [batch, g, n, L] -> contiguous [L, batch, g, n] in ``dtype``."""
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)
    return BC.permute(3, 0, 1, 2).to(dtype).contiguous()


def groups_channel_major(BC: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Gradient [L, batch, g, n] -> Mamba's layout ([batch, n, L] if ``dim`` is 3, else [batch, g, n, L])."""
    out = BC.permute(1, 2, 3, 0)
    if dim == 3:
        out = out.squeeze(1)
    return out.to(dtype).contiguous()


def per_group(x: torch.Tensor, g: int) -> torch.Tensor:
    """View a chunk [T, batch, d, ...] as [T, batch, g, d // g, ...] (channels lined up with their group)."""
    T, batch, d = x.shape[:3]
    return x.view(T, batch, g, d // g, *x.shape[3:])


def outer(x: torch.Tensor, BC: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """x [T, batch, d] times B or C [T, batch, g, n] -> ``out`` [T, batch, g, d // g, n]: x_i * BC_{group(i)}."""
    g = BC.shape[2]
    return torch.mul(per_group(x, g).unsqueeze(-1), BC.unsqueeze(3), out=out)


def sum_of_product(S: torch.Tensor, other: torch.Tensor, tmp: torch.Tensor, dims) -> torch.Tensor:
    """(S * other).sum(dims), the product written into the tile-sized buffer ``tmp`` (no fresh allocation).

    With ``other`` = C [T, batch, g, 1, n] and dims = -1 this is the readout sum_n S_in C_n per channel.
    """
    return torch.mul(S, other, out=tmp).sum(dims)


def contract_channels(x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """sum over the channels of a group of x_i * S[i, n]: x [T, batch, d], S [T, batch, g, dg, n] -> [T, batch, g, n].

    A batched (1 x dg) @ (dg x n) matmul: faster on CPU than multiply-and-sum over the channel axis.
    """
    T, batch, g, dg, n = S.shape
    return (x.view(T, batch, g, 1, dg) @ S).view(T, batch, g, n)


class Workspace:
    """Reusable tile-sized buffers: every tile's temporaries are written into the same memory.

    Fresh large allocations are returned to the OS when freed and page-faulted back on the next tile; reusing
    a few buffers for the whole call keeps them resident and in cache. ``tile(i, shape)`` is buffer ``i`` viewed
    as a contiguous tensor of ``shape`` (at most the largest tile), so ragged last tiles reuse it too.
    """

    def __init__(self, count: int, numel: int, like: torch.Tensor):
        self._flat = like.new_empty(count, numel)

    def tile(self, i: int, shape) -> torch.Tensor:
        numel = 1
        for s in shape:
            numel *= s
        return self._flat[i, :numel].view(shape)
