"""Pure-PyTorch references of stlm's kernels: the specification every fast backend is tested against.

Nothing here imports triton or needs a GPU.
"""

from stlm.kernels.reference.attention import attention_ref
from stlm.kernels.reference.scan import selective_scan_ref, selective_state_update_ref

__all__ = ["attention_ref", "selective_scan_ref", "selective_state_update_ref"]
