"""Choose one implementation (backend) of a kernel op from the device, the dtype and the user's request.

Each op (``selective_scan``, ``selective_state_update``, ``attention``) has several implementations with the
same signature. A backend is named in the registry below by module and function, and imported only when it
is chosen, so ``import stlm`` never imports triton. Selection happens once per module and (device, dtype)
(:class:`KernelChoice`), never per call inside ``forward``.

How a backend is chosen:

1. ``backend=`` of the op, or of the module (``model.kernels=...`` in the config); ``"auto"`` means choose;
2. else the environment variable ``STLM_KERNELS``: one name for every op that has it (``triton``), or a
   per-op list (``selective_scan=chunked,attention=sdpa``);
3. ``auto``: the first available backend of the device's preference list.

``chunked`` names the fast PyTorch path of every op (for attention that is ``sdpa``). A backend that
cannot run raises :class:`KernelUnavailableError` with the reason of every backend of that op.
"""

from __future__ import annotations

from stlm.errors import StlmUserError

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch

ENV_VAR = "STLM_KERNELS"


class KernelUnavailableError(StlmUserError, RuntimeError):
    """The requested kernel backend cannot run here; the message lists every backend's reason."""


def _always(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _triton_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton; Linux only)"
    if dtype not in TRITON_DTYPES:
        return f"the Triton kernels take float32, float16 or bfloat16 inputs, not {dtype}"
    if device.type == "cuda":
        return None
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    runtime = sys.modules.get("stlm.kernels.triton.runtime")
    if device.type == "cpu" and interpreting and runtime is not None and not runtime.INTERPRET:
        return (
            "TRITON_INTERPRET=1 was set after the Triton kernels were compiled for a GPU "
            "(set it before stlm.kernels.triton is imported)"
        )
    if interpreting and device.type == "cpu":
        return None
    return (
        f"tensors are on {device.type} and TRITON_INTERPRET is not set (needs a CUDA device, "
        "or TRITON_INTERPRET=1 set before triton is imported for the slow, exact CPU interpreter)"
    )


@dataclass(frozen=True)
class BackendSpec:
    """Where an implementation lives and when it can run (``unavailable`` returns a reason or None)."""

    module: str
    function: str
    unavailable: Callable[[torch.device, torch.dtype], str | None] = _always

    def load(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.function)


REGISTRY: dict[str, dict[str, BackendSpec]] = {
    "selective_scan": {
        "reference": BackendSpec("stlm.kernels.reference.scan", "selective_scan_ref"),
        "chunked": BackendSpec("stlm.kernels.chunked", "selective_scan_chunked"),
        "triton": BackendSpec("stlm.kernels.triton", "selective_scan_triton", _triton_reason),
    },
    "selective_state_update": {
        "reference": BackendSpec("stlm.kernels.reference.scan", "selective_state_update_ref"),
        "chunked": BackendSpec("stlm.kernels.chunked", "selective_state_update_chunked"),
        "triton": BackendSpec("stlm.kernels.triton", "selective_state_update_triton", _triton_reason),
    },
    "attention": {
        "reference": BackendSpec("stlm.kernels.reference.attention", "attention_ref"),
        "sdpa": BackendSpec("stlm.kernels.sdpa", "attention_sdpa"),
        "triton": BackendSpec("stlm.kernels.triton", "attention_triton", _triton_reason),
    },
}

# Preference order of ``auto`` by device type; names missing from an op's registry are skipped.
AUTO_ORDER: dict[str, list[str]] = {
    "cuda": ["triton", "chunked", "sdpa", "reference"],
    "cpu": ["chunked", "sdpa", "reference"],
}

# Per-op exceptions to AUTO_ORDER. The Triton state update is forward-only (streaming inference) and raises
# when gradients are needed, so ``auto`` prefers the differentiable chunked step on every device.
AUTO_ORDER_BY_OP: dict[str, dict[str, list[str]]] = {
    "selective_state_update": {"cuda": ["chunked", "reference"], "cpu": ["chunked", "reference"]},
}

# ``chunked`` is the fast PyTorch path of every op; for attention that is PyTorch's fused SDPA.
ALIASES: dict[str, dict[str, str]] = {"attention": {"chunked": "sdpa"}}

VALID_REQUESTS = ("auto", "reference", "chunked", "sdpa", "triton")


def _requested_from_env(op: str) -> str | None:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if "=" not in value:
        return value
    for item in value.split(","):
        key, _, name = item.partition("=")
        if key.strip() == op:
            return name.strip()
    return None


def _canonical(op: str, name: str) -> str:
    return ALIASES.get(op, {}).get(name, name)


def available_backends(op: str, device: torch.device, dtype: torch.dtype) -> dict[str, str | None]:
    """Map every backend of ``op`` to None (can run) or the reason it cannot."""
    return {name: spec.unavailable(device, dtype) for name, spec in REGISTRY[op].items()}


def resolve(
    op: str, requested: str = "auto", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[str, Callable]:
    """Return ``(backend name, implementation)`` of ``op`` for tensors on ``device`` with ``dtype``."""
    if op not in REGISTRY:
        raise ValueError(f"unknown kernel op {op!r}; valid ops: {sorted(REGISTRY)}")
    device = torch.device(device)
    if requested not in VALID_REQUESTS:
        raise ValueError(f"backend={requested!r} is not a kernel backend; choose one of {list(VALID_REQUESTS)}")
    source = "backend argument"
    if requested == "auto":
        from_env = _requested_from_env(op)
        if from_env:
            requested, source = from_env, f"environment variable {ENV_VAR}"
    reasons = available_backends(op, device, dtype)
    if requested == "auto":
        order = AUTO_ORDER_BY_OP.get(op, AUTO_ORDER)
        for name in order.get(device.type, order["cpu"]):
            name = _canonical(op, name)
            if name in reasons and reasons[name] is None:
                return name, REGISTRY[op][name].load()
        raise KernelUnavailableError(_explain(op, "auto", device, dtype, reasons, source))
    name = _canonical(op, requested)
    if name not in reasons or reasons[name] is not None:
        raise KernelUnavailableError(_explain(op, requested, device, dtype, reasons, source))
    return name, REGISTRY[op][name].load()


def _explain(op, requested, device, dtype, reasons, source) -> str:
    lines = [f"{op}: backend {requested!r} (from the {source}) cannot run on {device} with {dtype}."]
    if requested not in ("auto",) and _canonical(op, requested) not in reasons:
        lines.append(f"  {requested!r} is not a backend of {op}; its backends are {sorted(reasons)}.")
    for name, reason in reasons.items():
        lines.append(f"  {name}: {reason or 'available'}")
    return "\n".join(lines)


class KernelChoice:
    """A module's choice of backend for one op, made once per (device, dtype) and then reused.

    Modules hold one of these and call ``choice(device, dtype)`` in ``forward``; the first call resolves
    (and raises with every backend's reason if the request cannot be met), later calls are a dict lookup.
    """

    def __init__(self, op: str, requested: str = "auto"):
        if op not in REGISTRY:
            raise ValueError(f"unknown kernel op {op!r}; valid ops: {sorted(REGISTRY)}")
        if requested not in VALID_REQUESTS:
            raise ValueError(f"backend={requested!r} is not a kernel backend; choose one of {list(VALID_REQUESTS)}")
        self.op = op
        self.requested = requested
        self._cache: dict[tuple[str, torch.dtype], tuple[str, Callable]] = {}

    def __call__(self, device: torch.device, dtype: torch.dtype) -> Callable:
        return self.resolve(device, dtype)[1]

    def resolve(self, device: torch.device, dtype: torch.dtype) -> tuple[str, Callable]:
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = resolve(self.op, self.requested, device, dtype)
        return self._cache[key]

    def __repr__(self) -> str:
        chosen = {k: v[0] for k, v in self._cache.items()}
        return f"KernelChoice(op={self.op!r}, requested={self.requested!r}, chosen={chosen})"
