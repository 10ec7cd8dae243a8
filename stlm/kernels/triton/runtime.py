"""What the Triton kernels need to know about where they run, decided once at import.

Under ``TRITON_INTERPRET=1`` (CPU tensors, tests in CI) the kernels run in Triton's interpreter: exact but
slow, and ``triton.autotune`` cannot benchmark (there is no driver). So each kernel gets exactly one small
config there, and a list of configs to benchmark on a GPU. Nothing here queries ``torch.cuda``: the kernel
path must stay free of device queries so it also runs under the interpreter.

``STLM_TRITON_AUTOTUNE=0`` keeps only the first GPU config of each kernel (no benchmarking on first use):
for tests on a GPU, where tuning time buys nothing. Read at import, like ``TRITON_INTERPRET``.

``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates a function: triton's own helpers (``tl.zeros``,
``tl.sum``, ...) when triton is imported, our kernels when this package is. Set it before triton is imported
(torch._dynamo, which Lightning imports, imports triton); tests/kernels/conftest.py shows how to recover when
that cannot be arranged.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl
from triton import knobs

INTERPRET: bool = bool(knobs.runtime.interpret)
AUTOTUNE: bool = os.environ.get("STLM_TRITON_AUTOTUNE", "1") != "0"

# exp(x) = exp2(x log2(e)); exp2 is the GPU's native exponential. A kernel may only read a global that is a
# tl.constexpr; Python code reads LOG2E.value.
LOG2E = tl.constexpr(1.4426950408889634)


def pick_configs(gpu: list[triton.Config], interpreter: triton.Config) -> list[triton.Config]:
    """The configs ``triton.autotune`` may try: ``gpu`` on a device, only ``interpreter`` under the interpreter.

    With a single config the autotuner runs it without benchmarking.
    """
    if INTERPRET:
        return [interpreter]
    return gpu if AUTOTUNE else gpu[:1]


def next_pow2(x: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(x, minimum): Triton block sizes must be powers of two."""
    return max(minimum, triton.next_power_of_2(max(1, int(x))))
