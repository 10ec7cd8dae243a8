"""Triton kernels under TRITON_INTERPRET=1 on CPU tensors equal the reference, forward and backward.

Each test here has a GPU twin in test_triton_gpu.py (same cases, compiled kernels).
"""

from __future__ import annotations

import pytest
import torch
from triton_cases import ATTENTION_CASES, SCAN_CASES, check_attention, check_scan, check_state_update

import stlm.kernels as K


@pytest.mark.parametrize("case", sorted(SCAN_CASES))
def test_scan_interpreter_fp32(interpreter, case):
    check_scan(interpreter, torch.float32, case)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_scan_interpreter_low_precision(interpreter, dtype):
    check_scan(interpreter, dtype, "odd_L_ragged_blocks", L=21)


@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention_interpreter_fp32(interpreter, case):
    check_attention(interpreter, torch.float32, case)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attention_interpreter_low_precision(interpreter, dtype):
    check_attention(interpreter, dtype, "mask_and_full_bias", Nq=21, heads=2, bias=(2, 2, 21, 21))


def test_state_update_interpreter(interpreter):
    check_state_update(interpreter, torch.float32)


def test_state_update_triton_refuses_gradients(interpreter):
    t = [torch.randn(1, 4, 2, requires_grad=True), torch.randn(1, 4), torch.randn(1, 4), -torch.rand(4, 2),
         torch.randn(1, 2), torch.randn(1, 2)]
    with pytest.raises(RuntimeError, match="forward-only.*backend='chunked'"):
        K.selective_state_update(*t, backend="triton")


def test_scan_interpreter_empty_sequence(interpreter):
    """L = 0: no chunks; the final state and its gradient pass straight through."""
    from kernel_cases import scan_inputs

    t = scan_inputs(L=0)
    out, final = K.selective_scan(**t, return_final_state=True, backend="triton")
    assert out.shape == (2, 6, 0)
    torch.testing.assert_close(final, t["initial_state"])
    grad = torch.autograd.grad((final * 2.0).sum(), t["initial_state"])[0]
    torch.testing.assert_close(grad, torch.full_like(final, 2.0))
