"""Run a causal, recurrent stack over a long window in time chunks, recomputing each chunk in the backward.

A stack whose only memory of the past is a fixed-size state (the selective SSM's ``conv`` tail and ``ssm``
state) gives the same outputs when run K steps at a time, each chunk starting from the state the previous one
ended with. :func:`run_in_time_chunks` uses that to train long windows in little memory:

* forward: every chunk runs with no autograd graph; only the state at each chunk boundary is kept;
* backward: from the last chunk to the first, the chunk is run again with gradients (from its saved boundary
  state) and back-propagated at once (``torch.autograd.grad``) with the gradient flowing in from its outputs
  and from the next chunk's boundary state; parameter gradients are summed over chunks.

Activation memory is then one chunk's plus the boundary states, for one more forward pass of compute. The
result and every gradient equal those of the unchunked pass up to float rounding. Dropout masks and autocast
are replayed (the random-number state at each chunk start is restored for its recompute), so the recompute
sees what the forward saw. Compared with ``torch.utils.checkpoint`` per chunk, the forward here builds no
graph: measured here at a 2016-step window, the non-reentrant checkpoint's per-chunk graph nodes, kept between
the chunks' freed activations, fragmented the allocator's heap (resident memory 41 MiB for 10 MiB in use),
where this function peaked at 17 MiB.

Not supported: a second derivative through the chunks (``create_graph``), which raises.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from torch import nn

ChunkFn = Callable[[int, Sequence[torch.Tensor], list], tuple[torch.Tensor, list]]


def run_in_time_chunks(
    fn: ChunkFn, inputs: Sequence[torch.Tensor], chunk: int, keep: int, params: Sequence[torch.Tensor],
    n_states: int, dropout: bool = False,
) -> torch.Tensor:
    """The last ``keep`` steps of a stack's output over a window, computed ``chunk`` steps at a time.

    Args:
        fn: ``fn(n_kept, chunk_inputs, states) -> (out, new_states)``: runs one chunk (``chunk_inputs`` are the
            ``inputs`` sliced along dim 1) from ``states`` (a list of ``n_states`` dicts of tensors, or Nones at
            the start of the window) and returns its last ``n_kept`` output steps [B, n_kept, ...] and the
            states after it. It must be deterministic given the random-number state.
        inputs: tensors [B, T, ...] (time on dim 1); floating ones may require gradients.
        chunk: steps per chunk. keep: steps at the end of the window whose outputs are returned.
        params: the parameters ``fn`` uses (they receive their gradients through this call).
        dropout: whether ``fn`` draws random numbers (dropout in training): each chunk's RNG state is saved.
    """
    T = inputs[0].shape[1]
    plan = []  # (t0, t1, n_kept) per chunk
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        plan.append((t0, t1, max(0, t1 - max(t0, T - keep))))
    grads_needed = torch.is_grad_enabled() and (
        any(p.requires_grad for p in params) or any(x.requires_grad for x in inputs)
    )
    if not grads_needed:
        return _run_forward(fn, inputs, plan, n_states, None)[0]
    params = [p for p in params if p.requires_grad]
    return _TimeChunks.apply(fn, plan, n_states, dropout, len(inputs), *inputs, *params)


def _run_forward(fn, inputs, plan, n_states, rng_states):
    """All chunks in order; returns (kept outputs concatenated on dim 1, the states entering each chunk)."""
    states, starts, kept = [None] * n_states, [], []
    for t0, t1, n_kept in plan:
        starts.append(states)
        if rng_states is not None:
            rng_states.append(_rng_state(inputs[0].device))
        out, states = fn(n_kept, [x[:, t0:t1] for x in inputs], states)
        if n_kept:
            kept.append(out)
    return (torch.cat(kept, dim=1) if len(kept) > 1 else kept[0]), starts


def _rng_state(device: torch.device):
    cpu = torch.get_rng_state()
    return (cpu, torch.cuda.get_rng_state(device)) if device.type == "cuda" else (cpu, None)


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _flatten(states: list) -> list[tuple[int, str, torch.Tensor]]:
    return [(i, k, v) for i, s in enumerate(states) if s is not None for k, v in sorted(s.items())]


class _TimeChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, plan, n_states, dropout, n_inputs, *tensors):
        inputs = tensors[:n_inputs]
        device = inputs[0].device
        rng = [] if dropout else None
        # The caller's autocast, replayed in the recompute (the backward runs outside it).
        ctx.autocast = (device.type, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        out, starts = _run_forward(fn, inputs, plan, n_states, rng)
        ctx.fn, ctx.plan, ctx.n_states, ctx.rng, ctx.n_inputs = fn, plan, n_states, rng, n_inputs
        ctx.starts = starts  # boundary states: small intermediates, kept on ctx
        ctx.save_for_backward(*tensors)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out):
        tensors = ctx.saved_tensors
        inputs, params = tensors[: ctx.n_inputs], tensors[ctx.n_inputs :]
        device = inputs[0].device
        need_in = [x.requires_grad and x.is_floating_point() for x in inputs]
        g_inputs = [torch.zeros_like(x) if need else None for x, need in zip(inputs, need_in)]
        g_params = [None] * len(params)
        g_next = None  # gradient w.r.t. the states leaving the current chunk (from the next chunk)
        end = g_out.shape[1]
        device_type, autocast_on, autocast_dtype = ctx.autocast
        for c in range(len(ctx.plan) - 1, -1, -1):
            t0, t1, n_kept = ctx.plan[c]
            states_in = [
                None if s is None else {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in s.items()}
                for s in ctx.starts[c]
            ]
            chunk_in = [
                x[:, t0:t1].detach().requires_grad_(need) for x, need in zip(inputs, need_in)
            ]
            with contextlib.ExitStack() as stack:
                if ctx.rng is not None:  # the chunk's dropout masks, as drawn in the forward
                    stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
                    _set_rng_state(ctx.rng[c], device)
                if autocast_on:
                    stack.enter_context(torch.autocast(device_type, dtype=autocast_dtype))
                with torch.enable_grad():
                    out, states_out = ctx.fn(n_kept, chunk_in, states_in)
            outputs, grads = [], []
            if n_kept:
                outputs.append(out)
                grads.append(g_out[:, end - n_kept : end])
                end -= n_kept
            if g_next is not None:
                for (i, k, v), g in zip(_flatten(states_out), g_next):
                    if g is not None and v.requires_grad:
                        outputs.append(v)
                        grads.append(g)
            flat_in = _flatten(states_in)
            wrt_states = [v for _, _, v in flat_in if v.requires_grad]
            wrt_inputs = [x for x, need in zip(chunk_in, need_in) if need]
            wrt = wrt_states + wrt_inputs + list(params)
            if not outputs or not wrt:
                g_next = None
                continue
            gs = torch.autograd.grad(outputs, wrt, grads, allow_unused=True)
            g_states = iter(gs[: len(wrt_states)])
            g_next = [next(g_states) if v.requires_grad else None for _, _, v in flat_in]
            g_in = iter(gs[len(wrt_states) : len(wrt_states) + len(wrt_inputs)])
            for j, need in enumerate(need_in):
                if need:
                    g = next(g_in)
                    if g is not None:
                        g_inputs[j][:, t0:t1] = g
            for j, g in enumerate(gs[len(wrt_states) + len(wrt_inputs) :]):
                if g is not None:
                    g_params[j] = g if g_params[j] is None else g_params[j].add_(g)
        return (None, None, None, None, None, *g_inputs, *g_params)


def has_active_dropout(module: nn.Module) -> bool:
    """Whether ``module`` draws random numbers in its forward (a dropout with p > 0 in training mode)."""
    return module.training and any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules()
    )
