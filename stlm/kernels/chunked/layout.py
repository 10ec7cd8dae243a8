"""Layouts, contractions and reusable buffers shared by the chunked scan's forward and backward.

Everything is batch-major, in the SSM layer's own memory order. Per-channel series (u, delta, z, the output
and their gradients) are handled as [batch, L, d] *views*: in the layer, Mamba's channel-major [batch, d, L]
arguments are transposed views of [batch, L, d] memory, so :func:`series` makes no copy (a truly channel-major
input is copied once). Outputs and gradients are written into [batch, L, d] memory and returned as
[batch, d, L] views (:func:`channel_major`). B and C likewise: [batch, L, g, n] views (:func:`groups`).

Within a tile, decays, states and state gradients are [nb, T, g, n, dg] (nb sequences, T steps, g groups of
dg = d // g channels, n states), channels innermost: broadcasting B_tj, C_tj or a row of A over the channels
runs contiguous vector loops, and every per-channel operand of a tile ([nb, T, d]) shares the memory order of
the series, so elementwise ops run over whole rows. Measured here (one thread, 2 MiB tiles): Mamba's
[.., d, n] order with n = 8 innermost made the broadcasts and readouts ~3x slower, and time-major tiles mixed
with batch-major series ran the small per-channel ops at a third of their speed.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch


def series(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, d, L] -> [batch, L, d] in ``dtype`` with contiguous channels: a view when x already is one."""
    v = x.transpose(1, 2)
    if v.stride(-1) != 1 and v.shape[-1] > 1:
        v = v.contiguous()  # channel-major memory: one copy to [batch, L, d]
    return v.to(dtype)  # keeps the strides (no copy when the dtype matches)


def groups(BC: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C [batch, n, L] or [batch, g, n, L] -> [batch, L, g, n] view in ``dtype`` with contiguous n."""
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)
    v = BC.permute(0, 3, 1, 2)
    if v.stride(-1) != 1 and v.shape[-1] > 1:
        v = v.contiguous()
    return v.to(dtype)


def new_series(batch: int, L: int, d: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uninitialized [batch, L, d] (contiguous)."""
    return like.new_empty(batch, L, d, dtype=dtype or like.dtype)


def channel_major(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, L, d] -> [batch, d, L] (a view; cast to ``dtype`` keeping the strides)."""
    return x.transpose(1, 2).to(dtype)


def groups_channel_major(BC: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Gradient [batch, L, g, n] -> Mamba's layout ([batch, n, L] if ``dim`` is 3, else [batch, g, n, L])."""
    out = BC.permute(0, 2, 3, 1)
    if dim == 3:
        out = out.squeeze(1)
    return out.to(dtype)


def per_group(x: torch.Tensor, g: int) -> torch.Tensor:
    """A chunk [nb, T, d] as [nb, T, g, 1, dg]: each channel lined up with its group, broadcast over n."""
    return x.unflatten(-1, (g, x.shape[-1] // g)).unsqueeze(-2)


def outer(x: torch.Tensor, BC: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """x [nb, T, d] times B or C [nb, T, g, n] -> ``out`` [nb, T, g, n, dg]: x_i * BC_{group(i), j}."""
    return torch.mul(per_group(x, BC.shape[2]), BC.unsqueeze(-1), out=out)


def readout(S: torch.Tensor, other: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """sum over n of S * other -> [nb, T, d]; S [nb, T, g, n, dg], other [nb, T, g, n, 1] or [g, n, dg].

    The product goes into the tile-sized buffer ``tmp`` (no fresh allocation). With ``other`` = B this is
    sum_j G_tij B_tj, with A sum_j M_tij A_ij.
    """
    nb, T = S.shape[:2]
    return torch.mul(S, other, out=tmp).sum(-2).view(nb, T, -1)


def readout_loop(S: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """y_ti = sum_j C_tj S_tij -> [nb, T, d], with C [nb, T, g, n]: n multiply-adds, no tile-sized temporary
    (as fast here as :func:`readout` for n = 8)."""
    nb, T, g, n, dg = S.shape
    y = torch.mul(S[:, :, :, 0], C[..., 0:1])
    for j in range(1, n):
        y.addcmul_(S[:, :, :, j], C[..., j : j + 1])
    return y.view(nb, T, g * dg)


def contract_channels(S: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over the channels of a group of S[.., n, i] x_i: S [nb, T, g, n, dg], x [nb, T, d] -> [nb, T, g, n].

    A batched (n x dg) @ (dg x 1) matmul: faster here than multiply-and-sum over the channel axis.
    """
    nb, T, g, n, dg = S.shape
    return (S.reshape(nb * T * g, n, dg) @ x.reshape(nb * T * g, dg, 1)).view(nb, T, g, n)


class Workspace:
    """Reusable buffers: every tile's temporaries are written into the same memory.

    A fresh large allocation is returned to the OS when freed and page-faulted back on the next use (measured
    here: a tile multiply into fresh memory cost 2-4x one into resident memory). ``tile(i, shape)`` is buffer
    ``i`` viewed as a contiguous tensor of ``shape`` (at most ``numel`` elements), so ragged last tiles reuse it
    too; ``steps(i, shape, rows, cols)`` is the slice [rows, cols] of that view unbound along its time axis
    (dim 1), built once and cached: the sequential scans index one step per op, and building T step views per
    tile cost as much as the steps themselves.
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

    def steps(self, i: int, shape, rows: slice = slice(None), cols: slice = slice(None)) -> tuple[torch.Tensor, ...]:
        key = ("steps", i, tuple(shape), rows.start, rows.stop, cols.start, cols.stop)
        views = self._views.get(key)
        if views is None:
            views = self._views[key] = self.tile(i, shape)[rows, cols].unbind(1)
        return views


class _Pool(threading.local):
    """Per thread: workspaces not in use, by (kind, device, dtype, inference mode)."""

    def __init__(self):
        self.free: dict[tuple[str, str, torch.dtype], list[Workspace]] = {}


_POOL = _Pool()


def _pool_key(kind: str, like: torch.Tensor) -> tuple:
    """Buffers allocated under ``torch.inference_mode`` are inference tensors, which may not be written outside
    it (Lightning validates and tests in inference mode, then trains or predicts under ``no_grad``): the two
    modes keep separate workspaces."""
    return (kind, str(like.device), like.dtype, torch.is_inference_mode_enabled())
POOL_KEEP = 2  # idle workspaces kept per (kind, device, dtype)


def acquire(count: int, numel: int, like: torch.Tensor, kind: str = "tiles") -> Workspace:
    """A :class:`Workspace` of ``count`` buffers of ``numel`` elements (device and dtype of ``like``), for the
    caller's exclusive use until :func:`release`.

    On a CPU it comes from (and goes back to) a small per-thread pool, so consecutive calls (the chunks of a
    long window, the layers of a model, forward then backward) reuse resident memory; a workspace not released
    (a graph never back-propagated) is simply freed with its holder. On a GPU the caching allocator already
    does this and the pool is not used.
    """
    if like.device.type != "cpu":
        return Workspace(count, numel, like)
    free = _POOL.free.setdefault(_pool_key(kind, like), [])
    ws = next((w for w in free if w.fits(count, numel)), None)
    if ws is None:
        # One that also covers the idle ones it replaces: the pool never holds two workspaces where one would do
        # (the forward of a time chunk takes 2 tile buffers, its backward 4).
        for w in free:
            count, numel = max(count, w.count), max(numel, w.numel)
        free.clear()
        return Workspace(count, numel, like)
    free.remove(ws)
    return ws


def release(ws: Workspace, like: torch.Tensor, kind: str = "tiles") -> None:
    """Give ``ws`` back to the pool (it must not be used afterwards)."""
    if like.device.type != "cpu":
        return
    free = _POOL.free.setdefault(_pool_key(kind, like), [])
    free.append(ws)
    if len(free) > POOL_KEEP:
        free.sort(key=lambda w: w.count * w.numel)
        del free[0]  # keep the largest ones


@contextmanager
def workspace(count: int, numel: int, like: torch.Tensor):
    """:func:`acquire` for the duration of a ``with`` block."""
    ws = acquire(count, numel, like)
    try:
        yield ws
    finally:
        release(ws, like)
