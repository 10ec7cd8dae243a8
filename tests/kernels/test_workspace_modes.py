"""The chunked scan's pooled workspaces survive the grad-mode changes of a Lightning run: validation and test
run under ``torch.inference_mode`` (its buffers are inference tensors), training and prediction do not."""

from __future__ import annotations

import torch

from stlm.kernels import selective_scan


def test_scan_after_inference_mode_works_under_no_grad_and_with_autograd():
    g = torch.Generator().manual_seed(0)
    B, d, n, L = 2, 8, 4, 64
    u = torch.randn(B, d, L, generator=g)
    delta, A = torch.rand(B, d, L, generator=g), -torch.rand(d, n, generator=g)
    Bm, C = torch.randn(B, n, L, generator=g), torch.randn(B, n, L, generator=g)
    with torch.inference_mode():
        expected = selective_scan(u, delta, A, Bm, C, backend="chunked").clone()
    with torch.no_grad():
        again = selective_scan(u, delta, A, Bm, C, backend="chunked")
    torch.testing.assert_close(again, expected)
    u = u.clone().requires_grad_()
    selective_scan(u, delta, A, Bm, C, backend="chunked").sum().backward()
    assert torch.isfinite(u.grad).all()
