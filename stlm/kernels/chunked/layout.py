"""Layouts, contractions and reusable buffers shared by the chunked scan's forward and backward.

Per-channel series (u, delta, z, the output and their gradients) are handled as time-major *views*
[L, batch, d]: in the SSM layer Mamba's channel-major [batch, d, L] arguments are transposed views of
[batch, L, d] memory, so :func:`series` makes no copy (a truly channel-major input is copied once into
[batch, L, d] memory, where the d channels of one step are contiguous). Outputs and gradients are written into
[batch, L, d] memory (:func:`new_series`) and returned as [batch, d, L] views (:func:`channel_major`).
B and C likewise: [L, batch, g, n] views (:func:`groups`), gradients in [batch, L, g, n] memory.

Within a tile, decays, states and state gradients are [T, nb, g, n, dg] (T steps, nb sequences, g groups of
dg = d // g channels, n states), channels innermost: broadcasting B_tj, C_tj or a row of A over the channels
then runs contiguous vector loops. Measured here (a 2 MiB tile, one thread), Mamba's [.., d, n] order with
n = 8 innermost made the same broadcasts and readouts about 3x slower.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch


def series(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, d, L] -> [L, batch, d] in ``dtype`` with contiguous channels: a view when x already is one."""
    v = x.permute(2, 0, 1)
    if v.stride(-1) != 1 and v.shape[-1] > 1:
        v = x.transpose(1, 2).contiguous().permute(1, 0, 2)  # channel-major memory: one copy to [batch, L, d]
    return v.to(dtype)  # keeps the strides (no copy when the dtype matches)


def groups(BC: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C [batch, n, L] or [batch, g, n, L] -> [L, batch, g, n] view in ``dtype`` with contiguous n."""
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)
    v = BC.permute(3, 0, 1, 2)
    if v.stride(-1) != 1 and v.shape[-1] > 1:
        v = BC.permute(0, 3, 1, 2).contiguous().permute(1, 0, 2, 3)
    return v.to(dtype)


def new_series(L: int, batch: int, d: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uninitialized [L, batch, d] view of fresh [batch, L, d] memory."""
    return like.new_empty(batch, L, d, dtype=dtype or like.dtype).permute(1, 0, 2)


def channel_major(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[L, batch, d] -> [batch, d, L] (a view; cast to ``dtype`` keeping the strides)."""
    return x.permute(1, 2, 0).to(dtype)


def groups_channel_major(BC: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Gradient [L, batch, g, n] -> Mamba's layout ([batch, n, L] if ``dim`` is 3, else [batch, g, n, L])."""
    out = BC.permute(1, 2, 3, 0)
    if dim == 3:
        out = out.squeeze(1)
    return out.to(dtype)


def per_group(x: torch.Tensor, g: int) -> torch.Tensor:
    """A chunk [T, nb, d] as [T, nb, g, 1, dg]: each channel lined up with its group, broadcast over n."""
    return x.unflatten(-1, (g, x.shape[-1] // g)).unsqueeze(-2)


def outer(x: torch.Tensor, BC: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """x [T, nb, d] times B or C [T, nb, g, n] -> ``out`` [T, nb, g, n, dg]: x_i * BC_{group(i), j}."""
    return torch.mul(per_group(x, BC.shape[2]), BC.unsqueeze(-1), out=out)


def readout(S: torch.Tensor, other: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """sum over n of S * other -> [T, nb, d]; S [T, nb, g, n, dg], other [T, nb, g, n, 1] or [g, n, dg].

    The product goes into the tile-sized buffer ``tmp`` (no fresh allocation). With ``other`` = C this is
    y_ti = sum_j C_tj h_tij; with B it is sum_j G_tij B_tj, with A sum_j M_tij A_ij.
    """
    T, nb = S.shape[:2]
    return torch.mul(S, other, out=tmp).sum(-2).view(T, nb, -1)


def contract_channels(S: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over the channels of a group of S[.., n, i] x_i: S [T, nb, g, n, dg], x [T, nb, d] -> [T, nb, g, n].

    A batched (n x dg) @ (dg x 1) matmul: faster here than multiply-and-sum over the channel axis.
    """
    T, nb, g, n, dg = S.shape
    return (S.view(T * nb * g, n, dg) @ x.reshape(T * nb * g, dg, 1)).view(T, nb, g, n)


class Workspace:
    """Reusable tile-sized buffers: every tile's temporaries are written into the same memory.

    A fresh large allocation is returned to the OS when freed and page-faulted back on the next use (measured
    here: a tile multiply into fresh memory cost 2-4x one into resident memory). ``tile(i, shape)`` is buffer
    ``i`` viewed as a contiguous tensor of ``shape`` (at most ``numel`` elements), so ragged last tiles reuse it
    too; ``steps(i, shape)`` is that view unbound along its first axis, built once and cached: the sequential
    scans index one step per op, and building T step views per tile cost as much as the steps themselves.
    """

    def __init__(self, count: int, numel: int, like: torch.Tensor):
        self.count, self.numel = count, numel
        self._flat = like.new_empty(count * numel)
        self._views: dict = {}

    def fits(self, count: int, numel: int) -> bool:
        return count <= self.count and numel <= self.numel

    def tile(self, i: int, shape) -> torch.Tensor:
        key = ("tile", i, tuple(shape))
        view = self._views.get(key)
        if view is None:
            if len(self._views) > 512:  # many distinct shapes (ragged tiles of many lengths): start afresh
                self._views.clear()
            size = 1
            for s in shape:
                size *= s
            assert i < self.count and size <= self.numel, "tile larger than the workspace"
            view = self._views[key] = self._flat[i * self.numel : i * self.numel + size].view(shape)
        return view

    def steps(self, i: int, shape) -> tuple[torch.Tensor, ...]:
        key = ("steps", i, tuple(shape))
        views = self._views.get(key)
        if views is None:
            views = self._views[key] = self.tile(i, shape).unbind(0)
        return views


class _Pool(threading.local):
    """Per thread: workspaces not in use, by (device, dtype)."""

    def __init__(self):
        self.free: dict[tuple[str, torch.dtype], list[Workspace]] = {}


_POOL = _Pool()
POOL_KEEP = 2  # workspaces kept per (device, dtype): a forward recomputed inside a backward takes a second one


@contextmanager
def workspace(count: int, numel: int, like: torch.Tensor):
    """A :class:`Workspace` of ``count`` buffers of ``numel`` elements (device and dtype of ``like``).

    On a CPU it comes from (and goes back to) a small per-thread pool, so consecutive calls (the chunks of a
    long window, the layers of a model, forward then backward) reuse resident memory; nested use (a forward
    recomputed inside a backward) takes another one. On a GPU the caching allocator already does this.
    """
    if like.device.type != "cpu":
        yield Workspace(count, numel, like)
        return
    free = _POOL.free.setdefault((str(like.device), like.dtype), [])
    ws = next((w for w in free if w.fits(count, numel)), None)
    if ws is None:
        ws = Workspace(count, numel, like)
    else:
        free.remove(ws)
    try:
        yield ws
    finally:
        free.append(ws)
        if len(free) > POOL_KEEP:
            free.sort(key=lambda w: w.count * w.numel)
            del free[0]  # keep the largest ones
