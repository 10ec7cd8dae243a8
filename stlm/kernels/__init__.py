"""stlm's kernels: the selective scan and global attention, each with a readable reference, a fast PyTorch
path and a Triton kernel, behind one dispatch (:mod:`stlm.kernels.dispatch`).

Importing this package never imports triton; the Triton backend loads when it is chosen.
"""

from stlm.kernels.attention import ATTENTION_TOLERANCES, attention
from stlm.kernels.dispatch import KernelChoice, KernelUnavailableError, available_backends, resolve
from stlm.kernels.scan import SCAN_TOLERANCES, selective_scan, selective_state_update

__all__ = [
    "ATTENTION_TOLERANCES",
    "SCAN_TOLERANCES",
    "KernelChoice",
    "KernelUnavailableError",
    "attention",
    "available_backends",
    "resolve",
    "selective_scan",
    "selective_state_update",
]
