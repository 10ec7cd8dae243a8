"""How the chunked scan cuts (batch, L) into tiles, and the sequential part it runs inside one tile.

A tile is [T time steps, a block of the batch, d, n] (per-group view [T, nb, g, d // g, n], see
:mod:`stlm.kernels.chunked.layout`). Sizes:

* on a CPU a tile takes about ``TILE_BYTES["cpu"]``, so the few tile-sized tensors alive at once (decays,
  states, state gradients, a temporary) stay in the L2/L3 cache, while each step still holds enough elements
  (``MIN_STEP_BYTES``) that the per-op overhead of the sequential loop stays small: long sequences get the
  whole batch and T ~ TILE_BYTES / step; short sequences over a large batch (nodes folded into the batch, a
  12-step window) get all of L and a block of the batch;
* on a GPU the cost is the launch of each step's op, not the cache: whole batches, long chunks.
"""

from __future__ import annotations

from typing import Iterator

import torch

TILE_BYTES = {"cpu": 2 << 20, "cuda": 1 << 28}  # cpu: measured best of 1, 2, 4, 8 MiB here
MIN_STEP_BYTES = {"cpu": 64 << 10, "cuda": 1 << 28}


def tile_shape(batch: int, d: int, n: int, L: int, device: torch.device, itemsize: int = 4) -> tuple[int, int]:
    """(batch block, time steps per chunk) so that one [T, batch block, d, n] tile takes about ``TILE_BYTES``."""
    kind = device.type if device.type in TILE_BYTES else "cuda"
    budget = TILE_BYTES[kind]
    per_seq_step = max(1, d * n * itemsize)
    L = max(L, 1)
    steps_min = min(L, max(1, budget // MIN_STEP_BYTES[kind]))
    if batch * per_seq_step * steps_min <= budget:
        return batch, max(1, min(L, budget // (batch * per_seq_step)))
    return max(1, budget // (steps_min * per_seq_step)), steps_min


def tiles(batch: int, L: int, block: int, chunk: int, reverse: bool = False) -> Iterator[tuple[int, int, int, int]]:
    """(b0, b1, t0, t1) of every tile, time ascending (descending if ``reverse``) within each batch block."""
    for b0 in range(0, batch, block):
        starts = range(0, L, chunk)
        for t0 in reversed(starts) if reverse else starts:
            yield b0, min(b0 + block, batch), t0, min(t0 + chunk, L)


def scan_tile(a: torch.Tensor, bx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """In place: bx[t] <- a[t] * bx[t-1] + bx[t] with bx[-1] = h; returns bx, now the states H [T, ...].

    ``unbind`` builds the T views at once (cheaper than indexing per step); ``addcmul_`` is one fused op.
    """
    for a_t, b_t in zip(a.unbind(0), bx.unbind(0)):
        h = b_t.addcmul_(a_t, h)
    return bx


def reverse_scan_tile(a: torch.Tensor, G: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """In place: G[t] <- G[t] + a[t+1] * G[t+1], with a[T] * G[T] given as ``carry``; returns G."""
    G_t = G.unbind(0)
    a_t = a.unbind(0)
    G_t[-1].add_(carry)
    for t in range(len(G_t) - 2, -1, -1):
        G_t[t].addcmul_(a_t[t + 1], G_t[t + 1])
    return G
