"""Long context and streaming: the selective SSM against attention over time, and a streaming step against
recomputing the window. Writes the "Long context and streaming" section of docs/benchmarks.md.

    python scripts/bench_long_context.py            # full sizes (about 10-20 minutes on 2 cores)
    python scripts/bench_long_context.py --quick    # small sizes: a smoke test of this script

Training step (forward, L1 loss, backward, Adam) of the same STLM model (d_model 32, one block, spatial
attention over the nodes, flatten head over the last 12 steps) with the temporal mixer swapped:

* ``ssm``: the selective SSM (chunked scan on CPU);
* ``attention (fused)``: causal attention over time with rotary positions through PyTorch's fused SDPA (a
  flash-style kernel on CPU: no L x L matrix kept), attention's best implementation;
* ``attention (math)``: the same module under ``sdpa_kernel(MATH)``, which materializes the L x L scores, as
  attention is written in most spatiotemporal code bases.

Each cell runs in a fresh process: time = median wall time of the repeated steps; peak = the process's
high-water resident memory minus its resident memory before the first step (after a warm-up on a short
window). A cell whose estimated memory exceeds 60% of the available memory is skipped and says so.

Streaming: the traffic-default-sized model (200 nodes) is stepped through a history of h steps, then the median
latency of the next steps is measured, and compared with recomputing the windowed forward pass over the same
h-step history (what a windowed forecaster does at every new observation).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_common import machine, mem_available, rss_bytes, run_worker, write_section  # noqa: E402

WINDOWS = [12, 288, 2016, 8064]
TRAIN = dict(batch=1, nodes=16, d_model=32, horizon=12, head_steps=12)
STREAM = dict(nodes=200, d_model=32, horizon=12)
HISTORIES = [12, 288, 2016, 8064]
TEMPORALS = ["ssm", "attention", "attention_math"]
LABELS = {"ssm": "ssm", "attention": "attention (fused)", "attention_math": "attention (math)"}


def build_model(nodes: int, window: int, temporal: str, d_model: int = 32, horizon: int = 12, head_steps=12):
    from stlm.data.spec import DataSpec
    from stlm.models.forecaster import STLMForecaster
    from stlm.nn.spatial import GlobalAttention
    from stlm.nn.temporal import SelectiveSSM
    from stlm.nn.temporal_attention import CausalTemporalAttention

    spec = DataSpec(n_nodes=nodes, n_channels=1, window=window, horizon=horizon, steps_per_day=288,
                    days_per_week=7, interval_minutes=5)
    mixer = (functools.partial(SelectiveSSM, d_state=8, expand=1) if temporal == "ssm"
             else functools.partial(CausalTemporalAttention, n_heads=2))
    return STLMForecaster(spec, d_model=d_model, n_layers=1, temporal=mixer,
                          spatial=functools.partial(GlobalAttention, n_heads=2), seasonal_prior=False,
                          head_steps=head_steps)


def random_batch(batch: int, window: int, nodes: int, horizon: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    steps = torch.arange(window)
    x_time = torch.stack([steps % 288, (steps // 288) % 7], -1)[None].expand(batch, window, 2)
    return {"x": torch.randn(batch, window, nodes, 1, generator=g), "x_mask": torch.ones(batch, window, nodes, 1),
            "x_time": x_time, "y_time": x_time[:, :horizon], "y": torch.randn(batch, horizon, nodes, 1, generator=g)}


def train_worker(spec: dict) -> dict:
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    math_only = spec["temporal"] == "attention_math"
    temporal = "attention" if spec["temporal"].startswith("attention") else "ssm"
    model = build_model(spec["nodes"], spec["window"], temporal, spec["d_model"], spec["horizon"], spec["head_steps"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch):
        with sdpa_kernel(SDPBackend.MATH) if math_only else contextlib.nullcontext():
            loss = (model(batch) - batch["y"]).abs().mean()
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(random_batch(spec["batch"], 24, spec["nodes"], spec["horizon"]))  # warm-up: libraries, thread pools
    batch = random_batch(spec["batch"], spec["window"], spec["nodes"], spec["horizon"])
    rss0, times = rss_bytes(), []
    deadline = time.perf_counter() + spec["budget_s"]
    while len(times) < 10:
        t0 = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() > deadline:
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return dict(ms=1e3 * statistics.median(times[1:]), peak_mib=max(0.0, peak / 2**20), reps=len(times) - 1)


def stream_worker(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    h, nodes = spec["history"], spec["nodes"]
    model = build_model(nodes, h, "ssm", spec["d_model"], spec["horizon"], head_steps=12).eval()
    batch = random_batch(1, h + spec["reps"], nodes, spec["horizon"])
    x, x_time = batch["x"][:, :, :, :], batch["x_time"]
    with torch.no_grad():
        warm = model.init_state(1)
        for t in range(5):  # warm-up: kernel resolution, allocator, thread pools
            _, warm = model.step(x[:, t], x_time[:, t], warm)
        state = model.init_state(1)
        for t in range(h):  # the history, one observation at a time
            _, state = model.step(x[:, t], x_time[:, t], state)
        step_ms = []
        for t in range(h, h + spec["reps"]):
            t0 = time.perf_counter()
            _, state = model.step(x[:, t], x_time[:, t], state)
            step_ms.append(1e3 * (time.perf_counter() - t0))
        window = {k: v[:, :h] for k, v in batch.items() if k in ("x", "x_mask", "x_time")}
        window["y_time"] = batch["y_time"]
        model(window)  # warm-up of the windowed path
        recompute_ms = []
        for _ in range(spec["recompute_reps"]):
            t0 = time.perf_counter()
            model(window)
            recompute_ms.append(1e3 * (time.perf_counter() - t0))
    return dict(step_ms=statistics.median(step_ms), recompute_ms=statistics.median(recompute_ms))


def attention_math_bytes(spec: dict) -> float:
    """The math kernel keeps ~4 float32 L x L matrices per (sequence, head) through the backward."""
    return 4.0 * 4 * spec["batch"] * spec["nodes"] * 2 * spec["window"] ** 2


def section(quick: bool) -> str:
    windows = [12, 288] if quick else WINDOWS
    histories = [12, 288] if quick else HISTORIES
    script = Path(__file__).resolve()
    t_start, load_before = time.time(), os.getloadavg()[0]
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    lines = [
        f"Machine: {machine()}.",
        f"Command: `{threads}python scripts/bench_long_context.py{' --quick' if quick else ''}` "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average LOAD_BEFORE before, LOAD_AFTER after, "
        f"on {os.cpu_count()} cores).",
        "",
        f"### Training step vs window length (batch={TRAIN['batch']}, {TRAIN['nodes']} nodes, d_model={TRAIN['d_model']}, "
        "one block, float32)",
        "",
        "Same model, only the temporal mixer differs (see the script's docstring). Ratios: same run.",
        "",
        "| window | " + " | ".join(f"{LABELS[t]} ms | {LABELS[t]} peak MiB" for t in TEMPORALS)
        + " | ssm speed-up vs attention (fused / math) | attention / ssm memory (fused / math) |",
        "|---:|" + "---:|" * (2 * len(TEMPORALS) + 2),
    ]
    for L in windows:
        cells = {}
        for temporal in TEMPORALS:
            spec = dict(TRAIN, window=L, temporal=temporal, budget_s=4.0 if quick else 15.0, op="train")
            if temporal == "attention_math" and attention_math_bytes(spec) > 0.6 * mem_available():
                cells[temporal] = dict(skipped=f"needs ~{attention_math_bytes(spec) / 2**30:.0f} GiB")
                continue
            cells[temporal] = run_worker(script, spec)
            print(L, temporal, cells[temporal], flush=True)
        row = [f"{L:,}"]
        for t in TEMPORALS:
            r = cells[t]
            row += ([f"{r['ms']:,.0f}", f"{r['peak_mib']:,.0f}"] if "ms" in r
                    else [r.get("skipped") or r.get("error", "n/a"), "-"])
        ssm = cells["ssm"]

        def ratio(other, key):
            return f"{other[key] / ssm[key]:.1f}x" if "ms" in other and "ms" in ssm and ssm[key] > 0 else "-"

        row.append(f"{ratio(cells['attention'], 'ms')} / {ratio(cells['attention_math'], 'ms')}")
        row.append(f"{ratio(cells['attention'], 'peak_mib')} / {ratio(cells['attention_math'], 'peak_mib')}")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"### Streaming step vs history length ({STREAM['nodes']} nodes, d_model={STREAM['d_model']}, one block, "
        "ssm, batch 1, no_grad)",
        "",
        "Step = one new observation through `model.step` with the carried state (median of the next steps after the "
        "history). Recompute = the windowed forward pass over the whole history, what a forecaster without a state "
        "pays at every new observation.",
        "",
        "| history (steps) | streaming step ms | step vs history 12 | recompute window ms | recompute / step |",
        "|---:|---:|---:|---:|---:|",
    ]
    base = None
    for h in histories:
        r = run_worker(script, dict(STREAM, history=h, reps=50 if not quick else 10, recompute_reps=5 if not quick else 2,
                                    op="stream"))
        print(h, r, flush=True)
        if "error" in r:
            lines.append(f"| {h:,} | {r['error']} | | | |")
            continue
        base = base or r["step_ms"]
        lines.append(f"| {h:,} | {r['step_ms']:.2f} | {r['step_ms'] / base:.2f}x | {r['recompute_ms']:,.1f} | "
                     f"{r['recompute_ms'] / r['step_ms']:,.0f}x |")
    lines += ["", f"Whole benchmark: {(time.time() - t_start) / 60:.0f} min."]
    text = "\n".join(lines) + "\n"
    return text.replace("LOAD_BEFORE", f"{load_before:.1f}").replace("LOAD_AFTER", f"{os.getloadavg()[0]:.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(train_worker(spec) if spec["op"] == "train" else stream_worker(spec)))
        return 0
    write_section(args.output, "bench_long_context", "main", "Long context and streaming", section(args.quick))
    print(f"wrote the long-context section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
