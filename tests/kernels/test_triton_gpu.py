"""GPU twins of test_triton_interpret.py: the compiled Triton kernels equal the reference on CUDA.

Skipped (by tests/kernels/conftest.py) where there is no CUDA device. Run on a GPU machine with
``pytest -m gpu tests/kernels`` (scripts/device_check.sh).
"""

from __future__ import annotations

import pytest
import torch
from triton_cases import ATTENTION_CASES, SCAN_CASES, check_attention, check_scan, check_state_update

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(SCAN_CASES))
def test_scan_gpu(cuda, case, dtype):
    check_scan(cuda, dtype, case)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scan_gpu_longer(cuda, dtype):
    """Several GPU-sized chunks (64 steps) and channel blocks, a ragged end."""
    check_scan(cuda, dtype, "odd_L_ragged_blocks", batch=2, d=40, n=16, L=1000)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention_gpu(cuda, case, dtype):
    check_attention(cuda, dtype, case)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_gpu_larger(cuda, dtype):
    """Several GPU-sized tiles, head dim 64, N not a multiple of the tile."""
    check_attention(cuda, dtype, "mask_and_full_bias", Nq=300, d_head=64, bias=(2, 3, 300, 300))


@pytest.mark.gpu
def test_state_update_gpu(cuda):
    check_state_update(cuda, torch.float32)


@pytest.mark.gpu
def test_scan_gpu_empty_sequence(cuda):
    from kernel_cases import scan_inputs

    import stlm.kernels as K

    t = scan_inputs(L=0, device=cuda)
    out, final = K.selective_scan(**t, return_final_state=True, backend="triton")
    assert out.shape == (2, 6, 0)
    torch.testing.assert_close(final, t["initial_state"])
    grad = torch.autograd.grad((final * 2.0).sum(), t["initial_state"])[0]
    torch.testing.assert_close(grad, torch.full_like(final, 2.0))
