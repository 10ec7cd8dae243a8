"""Backend choice (argument, environment variable, auto), its errors, and argument validation at the ops."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from kernel_cases import attention_inputs, scan_inputs

import stlm.kernels.dispatch as dispatch
from stlm.kernels import KernelChoice, KernelUnavailableError, attention, resolve, selective_scan


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


def test_import_does_not_import_triton():
    code = "import sys, stlm, stlm.kernels; assert 'triton' not in sys.modules, 'triton imported'; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_auto_on_cpu_picks_fast_pytorch_paths(no_env):
    assert resolve("selective_scan", "auto", "cpu", torch.float32)[0] == "chunked"
    assert resolve("selective_state_update", "auto", "cpu", torch.float32)[0] == "chunked"
    assert resolve("attention", "auto", "cpu", torch.float32)[0] == "sdpa"


def test_auto_state_update_stays_differentiable_on_cuda(no_env):
    """The Triton state update is forward-only, so auto never picks it (choice only; nothing runs here)."""
    assert resolve("selective_state_update", "auto", "cuda", torch.float32)[0] == "chunked"


def test_forced_by_argument(no_env):
    name, fn = resolve("selective_scan", "reference", "cpu", torch.float32)
    assert name == "reference" and fn.__name__ == "selective_scan_ref"
    assert resolve("attention", "chunked", "cpu", torch.float32)[0] == "sdpa"  # chunked = the fast path


def test_forced_by_environment(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert resolve("selective_scan")[0] == "reference"
    assert resolve("attention")[0] == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "selective_scan=chunked,attention=reference")
    assert resolve("selective_scan")[0] == "chunked"
    assert resolve("attention")[0] == "reference"
    # an explicit argument wins over the environment
    assert resolve("attention", "sdpa")[0] == "sdpa"


def test_environment_reaches_the_public_op(monkeypatch):
    import stlm.kernels.reference.scan as reference_scan

    calls = []
    real = reference_scan.selective_scan_ref
    monkeypatch.setattr(reference_scan, "selective_scan_ref", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv(dispatch.ENV_VAR, "selective_scan=reference")
    selective_scan(**scan_inputs(L=4))
    assert calls == [1]


def test_impossible_choice_lists_every_reason(monkeypatch, no_env):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelUnavailableError) as err:
        resolve("attention", "triton", "cpu", torch.float32)
    msg = str(err.value)
    assert "backend 'triton' (from the backend argument) cannot run on cpu" in msg
    assert "reference: available" in msg and "sdpa: available" in msg
    assert "triton: tensors are on cpu and TRITON_INTERPRET is not set" in msg


def test_impossible_choice_from_environment_names_the_variable(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    with pytest.raises(KernelUnavailableError, match=f"environment variable {dispatch.ENV_VAR}"):
        resolve("selective_scan", "auto", "cpu", torch.float32)


def test_triton_rejects_float64(no_env):
    with pytest.raises(KernelUnavailableError, match="triton: the Triton kernels take float32, float16 or bfloat16"):
        resolve("selective_scan", "triton", "cpu", torch.float64)


def test_missing_triton_names_the_install_command(monkeypatch, no_env):
    real = importlib.util.find_spec
    fake = lambda name, *a: None if name == "triton" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(dispatch.importlib.util, "find_spec", fake)
    with pytest.raises(KernelUnavailableError, match=r"triton: triton is not installed \(pip install triton"):
        resolve("attention", "triton", "cuda", torch.bfloat16)


def test_unknown_backend_and_op_list_the_choices():
    with pytest.raises(ValueError, match="choose one of .*'chunked'.*'triton'"):
        resolve("selective_scan", "cuda-fast")
    with pytest.raises(ValueError, match="valid ops"):
        resolve("convolution")
    with pytest.raises(ValueError, match="choose one of"):
        KernelChoice("attention", "flash")


def test_kernel_choice_resolves_once(monkeypatch, no_env):
    choice = KernelChoice("selective_scan", "auto")
    calls = []
    real = dispatch.resolve
    monkeypatch.setattr(dispatch, "resolve", lambda *a: calls.append(a) or real(*a))
    for _ in range(3):
        assert choice.resolve(torch.device("cpu"), torch.float32)[0] == "chunked"
    assert len(calls) == 1
    assert "chunked" in repr(choice)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(A=torch.zeros(5, 3)), r"A must be \[d=6, n\]"),
        (dict(delta=torch.zeros(2, 6, 4)), "delta has shape"),
        (dict(B=torch.zeros(2, 4, 5, 7)), "B has 4 groups, which must divide d=6"),
        (dict(C=torch.zeros(2, 5)), r"C must be \[batch, n, L\] or \[batch, g, n, L\]"),
        (dict(D=torch.zeros(5)), "D has shape"),
        (dict(z=torch.zeros(2, 6, 8)), "z has shape"),
        (dict(delta_bias=torch.zeros(6, 1)), "delta_bias has shape"),
        (dict(initial_state=torch.zeros(2, 6, 4)), "initial_state has shape"),
        (dict(u=torch.zeros(6, 7)), r"u must be \[batch, d, L\]"),
    ],
)
def test_scan_validation_names_the_argument(change, match):
    t = {k: (v.detach() if v is not None else None) for k, v in scan_inputs(d=6, n=5, L=7).items()}
    t.update(change)
    with pytest.raises(ValueError, match=match):
        selective_scan(**t)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(q=torch.zeros(3, 4, 5)), r"q must be \[batch, heads, N_q, d_head\]"),
        (dict(k=torch.zeros(2, 3, 9, 7)), "k must be"),
        (dict(v=torch.zeros(2, 3, 8, 12)), "v must match k"),
        (dict(key_padding_mask=torch.zeros(2, 9)), "key_padding_mask must be a bool tensor"),
        (dict(bias=torch.zeros(4, 9, 9)), "bias of shape .* does not broadcast"),
    ],
)
def test_attention_validation_names_the_argument(change, match):
    t = {k: (v.detach() if v is not None else None) for k, v in attention_inputs(Nq=9, d_head=12).items()}
    t.update(change)
    with pytest.raises(ValueError, match=match):
        attention(**t)
