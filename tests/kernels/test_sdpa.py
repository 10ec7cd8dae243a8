"""The SDPA backend (PyTorch's fused attention) equals the reference, masks, bias and empty rows included."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import assert_matches, attention_inputs, run_attention

from stlm.kernels import ATTENTION_TOLERANCES
from stlm.kernels.reference import attention_ref
from stlm.kernels.sdpa import attention_sdpa


@pytest.mark.parametrize(
    "case",
    [
        dict(Nq=37, d_head=12, bias=(2, 3, 37, 37)),
        dict(Nq=21, d_head=12, all_masked=True, bias=(21, 21)),
        dict(Nq=19, Nk=35, d_head=20, mask=False),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sdpa_equals_reference(case, dtype):
    t = attention_inputs(dtype=dtype, **case)
    out_r, grads_r = run_attention(attention_ref, t)
    out, grads = run_attention(attention_sdpa, t)
    tol = ATTENTION_TOLERANCES[dtype]
    assert_matches(out, out_r, tol, "out")
    for k in grads_r:
        assert_matches(grads[k], grads_r[k], tol, f"grad {k}")
