"""Pieces shared by the Triton scan kernels: the combine function of the linear recurrence, softplus, configs.

Tiling (both kernels). A program owns one batch element, one group of B/C and BLOCK_D channels of that
group, and keeps their state h [BLOCK_D, BLOCK_N] in float32 registers. It walks L in chunks of BLOCK_L
steps, and inside a chunk one state j at a time (a loop over n, not unrolled): the recurrence
h_t = a_t h_{t-1} + b_t over the [BLOCK_D, BLOCK_L] tile of state j is one ``tl.associative_scan`` along time
with the combine below; column j of the carried state is read and written with masked sums (cheap: BLOCK_D x
BLOCK_N). Per-state tiles keep the registers per thread low: a [BLOCK_D, BLOCK_N, BLOCK_L] tile, or the loop
over states unrolled, needed 180-255 registers and spilled in the backward (measured with ptxas, sm_90).
Padding (time steps past L, channels past d // g) uses decay 1 and input 0, so the state passes through
unchanged and contributes nothing.
"""

from __future__ import annotations

import triton
import triton.language as tl

from stlm.kernels.triton.runtime import LOG2E, pick_configs  # noqa: F401 (LOG2E re-exported)

# Time steps per chunk. Fixed (not autotuned) because the backward must cut L exactly where the forward
# saved its chunk-start states.
BLOCK_L_GPU = 64
BLOCK_L_INTERPRET = 16


@triton.jit
def linear_combine(a1, b1, a2, b2):
    """Compose x -> a1 x + b1 (earlier step) with x -> a2 x + b2 (later step): x -> a1 a2 x + (a2 b1 + b2)."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def softplus(x):
    """log(1 + e^x), stable for any x; x itself above 20, like PyTorch's F.softplus."""
    sp = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
    return tl.where(x > 20.0, x, sp)


@triton.jit
def softplus_grad(x):
    """d softplus(x) / dx: sigmoid(x), exactly 1 above 20."""
    return tl.where(x > 20.0, 1.0, tl.sigmoid(x))


def scan_configs(backward: bool = False) -> list[triton.Config]:
    """(BLOCK_D, warps) to try on a GPU; one small config under the interpreter.

    Every GPU config compiles for sm_90 without spilling (checked with ptxas at BLOCK_L = 64: forward 72-191
    registers per thread, backward 120-199).
    """
    pairs = [(4, 4), (8, 4), (16, 8)] if backward else [(4, 4), (8, 4), (8, 8), (16, 8)]
    gpu = [triton.Config({"BLOCK_D": bd}, num_warps=w, num_stages=1) for bd, w in pairs]
    return pick_configs(gpu, triton.Config({"BLOCK_D": 4}, num_warps=4, num_stages=1))
