"""How the chunked scan cuts (batch, L) into tiles, and the sequential part it runs inside one tile.

A tile is [T time steps, a block of nb sequences, g, n, dg] (see :mod:`stlm.kernels.chunked.layout`). Sizes:

* on a CPU a tile takes about ``TILE_BYTES["cpu"]``, so the few tile-sized buffers alive at once (decays,
  states, state gradients, a temporary) stay in the L2/L3 cache, while each step still holds enough elements
  (``MIN_STEP_BYTES``) that the per-op overhead of the sequential loop stays small: long sequences get the
  whole batch and T ~ TILE_BYTES / step; short sequences over a large batch (nodes folded into the batch, a
  12-step window) get all of L and a block of the batch;
* on a GPU the cost is the launch of each step's op, not the cache: whole batches, long chunks.

The sequential part is one fused multiply-add per step on a tile's step views (built once per workspace,
see :class:`~stlm.kernels.chunked.layout.Workspace`). A two-level scan (every sub-chunk of ~sqrt(T) steps
stepped at once with its running decay product, then the carries, then one correction pass) cuts the Python
steps from T to ~2 sqrt(T) but adds two passes over the tile; with a small state per step it loses. Measured
here (one thread, 16 sequences x 32 channels x 8 states per step): a 128-step tile took 211 us as a loop and
596 us two-level; all 2016 steps at once 6.5 ms and 12.5 ms.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

TILE_BYTES = {"cpu": 2 << 20, "cuda": 1 << 28}  # cpu: measured best of 1, 2, 4, 8 MiB here
MIN_STEP_BYTES = {"cpu": 64 << 10, "cuda": 1 << 28}
# The forward keeps a sequence's decays and states for the backward (instead of recomputing them there) when
# both fit in this: a time chunk of a long window does; a whole long window, or a large batch, does not.
KEEP_BYTES = {"cpu": 8 << 20, "cuda": 1 << 28}


def keep_bytes(device: torch.device) -> int:
    return KEEP_BYTES.get(device.type, KEEP_BYTES["cuda"])


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


def scan_steps(a: Sequence[torch.Tensor], bx: Sequence[torch.Tensor], h: torch.Tensor) -> None:
    """In place over the step views of a tile: bx[t] <- a[t] * bx[t-1] + bx[t], with bx[-1] = h.

    Afterwards bx holds the states h_t; ``addcmul_`` is one fused op per step.
    """
    for a_t, b_t in zip(a, bx):
        h = b_t.addcmul_(a_t, h)


def reverse_scan_steps(a: Sequence[torch.Tensor], G: Sequence[torch.Tensor], carry: torch.Tensor | None) -> None:
    """In place over the step views of a tile: G[t] <- G[t] + a[t+1] * G[t+1], with a[T] * G[T] = ``carry``."""
    if carry is not None:
        G[-1].add_(carry)
    for t in range(len(G) - 2, -1, -1):
        G[t].addcmul_(a[t + 1], G[t + 1])
