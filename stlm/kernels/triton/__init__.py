"""Triton backends of stlm's kernels. Importing this package imports triton; :mod:`stlm.kernels.dispatch`
loads it only when the ``triton`` backend is chosen.

Naming (kernel -> launcher -> autograd Function -> backend function):

    _scan_fwd_kernel, _scan_bwd_kernel -> _scan_fwd, _scan_bwd -> SelectiveScanFn -> selective_scan_triton
    _attn_fwd_kernel, _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel -> _attn_fwd, _attn_bwd -> FlashAttentionFn
        -> attention_triton
    _state_update_kernel -> selective_state_update_triton (forward only)

On a CPU machine the kernels run under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before this
package is imported (see :mod:`stlm.kernels.triton.runtime`).
"""

from stlm.kernels.triton.attention import FlashAttentionFn, attention_triton
from stlm.kernels.triton.scan import SelectiveScanFn, selective_scan_triton
from stlm.kernels.triton.state_update import selective_state_update_triton

__all__ = [
    "FlashAttentionFn",
    "SelectiveScanFn",
    "attention_triton",
    "selective_scan_triton",
    "selective_state_update_triton",
]
