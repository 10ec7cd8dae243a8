"""Fast PyTorch paths of the selective scan, for CPU and GPU, with no compiled extension.

* :func:`selective_scan_chunked`: the scan over L processed in cache-sized chunks, with a hand-written
  backward (a reverse scan) instead of autograd over L steps (:mod:`stlm.kernels.chunked.scan`);
* :func:`selective_state_update_chunked`: one recurrent step, vectorized (:mod:`stlm.kernels.chunked.step`).

Same signatures and semantics as the references in :mod:`stlm.kernels.reference.scan`.
"""

from stlm.kernels.chunked.scan import ChunkedScanFn, selective_scan_chunked
from stlm.kernels.chunked.step import selective_state_update_chunked

__all__ = ["ChunkedScanFn", "selective_scan_chunked", "selective_state_update_chunked"]
