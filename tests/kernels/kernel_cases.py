"""Inputs and comparisons shared by the kernel tests (CPU, interpreter and GPU twins run the same checks)."""

from __future__ import annotations

import torch

SCAN_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def param_dtype(dtype: torch.dtype) -> torch.dtype:
    """Parameters (A, D, delta_bias) and the initial state stay float32 under 16-bit activations."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def scan_inputs(
    batch=2, d=6, n=5, L=37, groups=None, c_groups="same", D=True, z=True, delta_bias=True, initial_state=True,
    dtype=torch.float32, device="cpu", seed=0,
) -> dict[str, torch.Tensor | None]:
    """Random scan inputs in Mamba's layout (leaves requiring grad); B, C grouped when ``groups`` is set."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(dt).to(device)

    pdt = param_dtype(dtype)
    c_groups = groups if c_groups == "same" else c_groups
    bc_shape = lambda g: (batch, n, L) if g is None else (batch, g, n, L)  # noqa: E731
    t = {
        "u": rand(batch, d, L),
        "delta": rand(batch, d, L, scale=0.5),
        "A": -(torch.rand(d, n, generator=gen, dtype=torch.float64) + 0.2).to(pdt).to(device),
        "B": rand(*bc_shape(groups)),
        "C": rand(*bc_shape(c_groups)),
        "D": rand(d, dt=pdt) if D else None,
        "z": rand(batch, d, L) if z else None,
        "delta_bias": rand(d, scale=0.3, dt=pdt) if delta_bias else None,
        "initial_state": rand(batch, d, n, dt=pdt) if initial_state else None,
    }
    return {k: (v.requires_grad_() if v is not None else None) for k, v in t.items()}


def run_scan(fn, inputs: dict, delta_softplus=True, **kwargs):
    """(out, final state, gradients of every given input) for a fixed random cotangent of both outputs."""
    out, final = fn(
        inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], D=inputs["D"], z=inputs["z"],
        delta_bias=inputs["delta_bias"], delta_softplus=delta_softplus, initial_state=inputs["initial_state"],
        return_final_state=True, **kwargs,
    )
    gen = torch.Generator().manual_seed(1)
    w_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, torch.float32)
    w_fin = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(out.device, torch.float32)
    loss = (out.float() * w_out).sum() + (final.float() * w_fin).sum()
    leaves = [(k, v) for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad(loss, [v for _, v in leaves])
    return out, final, {k: g for (k, _), g in zip(leaves, grads)}


def attention_inputs(batch=2, heads=3, Nq=37, Nk=None, d_head=12, mask=True, all_masked=False, bias=None,
                     dtype=torch.float32, device="cpu", seed=0):
    """q, k, v (leaves requiring grad), a key padding mask and a bias of shape ``bias`` (None for none)."""
    gen = torch.Generator().manual_seed(seed)
    Nk = Nq if Nk is None else Nk
    rand = lambda *s: torch.randn(*s, generator=gen).to(dtype).to(device).requires_grad_()  # noqa: E731
    t = {"q": rand(batch, heads, Nq, d_head), "k": rand(batch, heads, Nk, d_head), "v": rand(batch, heads, Nk, d_head)}
    t["key_padding_mask"] = None
    if mask:
        m = torch.rand(batch, Nk, generator=gen) < 0.3
        if all_masked:
            m[-1] = True
        t["key_padding_mask"] = m.to(device)
    t["bias"] = rand(*bias) if bias is not None else None
    return t


def run_attention(fn, inputs: dict, **kwargs):
    """(out, gradients of q, k, v and the bias) for a fixed random cotangent."""
    out = fn(inputs["q"], inputs["k"], inputs["v"], key_padding_mask=inputs["key_padding_mask"],
             bias=inputs["bias"], **kwargs)
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(out.shape, generator=gen).to(out.device)
    leaves = [(k, inputs[k]) for k in ("q", "k", "v", "bias") if inputs[k] is not None]
    grads = torch.autograd.grad((out.float() * w).sum(), [v for _, v in leaves])
    return out, {k: g for (k, _), g in zip(leaves, grads)}


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, tol: tuple[float, float], name: str) -> None:
    """|actual - expected| <= atol * max(1, max|expected|) + rtol * |expected|, elementwise.

    The absolute part scales with the tensor's magnitude: gradients summed over L or N terms carry
    rounding errors relative to the terms, not to a (possibly cancelling) sum.
    """
    atol, rtol = tol
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.isfinite(a).all(), f"{name}: non-finite values"
    err = (a - e).abs()
    bound = atol * max(1.0, e.abs().max().item() if e.numel() else 1.0) + rtol * e.abs()
    worst = (err - bound).max().item() if e.numel() else -1.0
    assert worst <= 0, f"{name}: max error {err.max().item():.3g} exceeds tolerance (atol={atol}, rtol={rtol})"


def assert_scan_matches(got, want, tol) -> None:
    out, final, grads = got
    out_r, final_r, grads_r = want
    assert out.dtype == out_r.dtype, f"out dtype {out.dtype} != {out_r.dtype}"
    assert_matches(out, out_r, tol, "out")
    assert_matches(final, final_r, tol, "final_state")
    assert grads.keys() == grads_r.keys()
    for k in grads:
        assert grads[k].dtype == grads_r[k].dtype, f"grad {k} dtype {grads[k].dtype} != {grads_r[k].dtype}"
        assert_matches(grads[k], grads_r[k], tol, f"grad {k}")
