"""Benchmark stlm's kernels and write the tables into docs/benchmarks.md.

    python scripts/bench_kernels.py                  # CPU tables (and the GPU section when CUDA is present)
    python scripts/bench_kernels.py --quick          # small sizes: a smoke test of this script
    python scripts/bench_kernels.py --gpu --output "$OUT/benchmarks_gpu.md"   # GPU section only

Each run replaces only its own sections of the output file ("Kernels (CPU)", "Kernels (GPU)"), between
``<!-- bench_kernels:... -->`` markers; the file is created with a header when absent.

Method (CPU). Every measurement (one op, backend, size and mode) runs in a fresh subprocess, so the peak of one
cannot hide another's. The worker builds the inputs, warms the same op up on a tiny problem (loading
libraries and thread pools), reads its resident memory, then runs the real problem ``reps`` times: time is the
median wall time of the runs, peak memory is the process's high-water mark (``ru_maxrss``) minus the resident
memory before the first run, i.e. what the op itself adds to its inputs. ``fwd`` is inference (no_grad);
``fwd+bwd`` is a training step of the op: forward with autograd, then backward of a random cotangent into
every input. Ratios compare backends measured in the same run.

Method (GPU). In process: CUDA-event timings through ``triton.testing.do_bench`` (median), peak memory from
``torch.cuda.max_memory_allocated`` above the inputs. Achieved bandwidth counts only the bytes that must move
(each input read once, each output written once) against the H200's 4.8 TB/s.
"""

from __future__ import annotations

import argparse
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

from bench_common import has_section, machine, mem_available, rss_bytes, run_worker  # noqa: E402
from bench_common import write_section as _write_section  # noqa: E402

SCAN_SIZE = dict(batch=4, d=64, n=16)
SCAN_L = [256, 1024, 4096, 16384]
MODEL_SCAN = dict(batch=2048, d=128, n=16, L=12)  # nodes folded into the batch, a 12-step window
ATTN_SIZE = dict(batch=1, heads=8, d_head=64)
ATTN_N = [256, 1024, 4096, 8192]
LARGE_GRAPH_N = 8600  # a LargeST-CA-sized sensor graph
MODEL_STEP = dict(batch=16, nodes=207, window=12, d_model=64, layers=2)  # METR-LA-sized
H200_BANDWIDTH = 4.8e12  # bytes/s
MEMORY_SAFETY = 0.6  # run a measurement only if its estimated peak fits in this share of MemAvailable


# ----------------------------------------------------------------------------------------------- workers


def _inputs(op: str, size: dict, device, dtype, grad: bool, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device=device, dtype=dt).requires_grad_(grad)

    if op == "scan":
        b, d, n, L = size["batch"], size["d"], size["n"], size["L"]
        A = (-(torch.rand(d, n, generator=gen) + 0.5)).to(device).requires_grad_(grad)
        return dict(u=rand(b, d, L), delta=rand(b, d, L, scale=0.5, shift=-1.0), A=A, B=rand(b, n, L),
                    C=rand(b, n, L), D=rand(d, dt=torch.float32), z=rand(b, d, L),
                    delta_bias=rand(d, scale=0.1, dt=torch.float32))
    b, h, N, dh = size["batch"], size["heads"], size["N"], size["d_head"]
    t = dict(q=rand(b, h, N, dh), k=rand(b, h, N, dh), v=rand(b, h, N, dh))
    if size.get("mask"):
        t["key_padding_mask"] = (torch.rand(b, N, generator=gen) < size["mask"]).to(device)
    return t


def _op(op: str, backend: str):
    from stlm.kernels import attention, selective_scan

    fn = selective_scan if op == "scan" else attention
    return lambda **kw: fn(**kw, backend=backend)


def _tiny(op: str, size: dict) -> dict:
    if op == "scan":
        return {**size, "batch": 2, "L": 8}
    return {**size, "batch": 1, "N": 16}


def _step(fn, inputs: dict, mode: str, cotangent=None):
    import torch

    if mode == "fwd":
        with torch.no_grad():
            fn(**inputs)
        return
    for t in inputs.values():
        t.grad = None
    out = fn(**inputs)
    out.backward(cotangent if cotangent is not None else torch.ones_like(out))


def worker(spec: dict) -> dict:
    """One CPU measurement (runs in its own process)."""
    import torch

    fn = _op(spec["op"], spec["backend"])
    grad = spec["mode"] == "fwd+bwd"
    dtype = getattr(torch, spec["dtype"])
    _step(fn, _inputs(spec["op"], _tiny(spec["op"], spec["size"]), "cpu", dtype, grad), spec["mode"])  # warm-up
    inputs = _inputs(spec["op"], spec["size"], "cpu", dtype, grad)
    cotangent = None
    rss0 = rss_bytes()
    times = []
    deadline = time.perf_counter() + spec["budget_s"]
    while len(times) < spec["max_reps"]:
        t0 = time.perf_counter()
        _step(fn, inputs, spec["mode"], cotangent)
        times.append(time.perf_counter() - t0)
        if len(times) >= spec["min_reps"] and time.perf_counter() > deadline:
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0  # ru_maxrss is in KiB on Linux
    timed = times[1:] if len(times) >= 3 else times  # the first run also pays first-touch page faults
    return dict(ms=1e3 * statistics.median(timed), peak_mib=max(0.0, peak / 2**20), reps=len(timed))


def model_worker(spec: dict) -> dict:
    """Time an STLM training step (forward, L1 loss, backward, Adam) and the scan's share of it.

    The scan's forward is timed around the backend call; its backward (one autograd node for ``chunked``)
    between hooks on that node, so nothing else in the step is counted and no profiler overhead is added.
    """
    import functools

    import torch

    import stlm.kernels.chunked as chunked
    from stlm.data.spec import DataSpec
    from stlm.models.forecaster import STLMForecaster
    from stlm.nn.spatial import GlobalAttention
    from stlm.nn.temporal import SelectiveSSM

    size = spec["size"]
    B, N, T = size["batch"], size["nodes"], size["window"]
    data = DataSpec(n_nodes=N, n_channels=1, window=T, horizon=T, steps_per_day=288, days_per_week=7,
                    interval_minutes=5)
    torch.manual_seed(0)
    model = STLMForecaster(
        data, d_model=size["d_model"], n_layers=size["layers"],
        temporal=functools.partial(SelectiveSSM, d_state=16, expand=2),
        spatial=functools.partial(GlobalAttention, n_heads=4), dropout=0.0, kernels=spec["backend"],
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batch = {
        "x": torch.randn(B, T, N, 1, generator=gen),
        "x_mask": (torch.rand(B, T, N, 1, generator=gen) > 0.1).float(),
        "x_time": torch.stack([torch.randint(0, 288, (B, T), generator=gen),
                               torch.randint(0, 7, (B, T), generator=gen)], -1),
    }
    target = torch.randn(B, T, N, 1, generator=gen)
    scan_s: list[float] = []
    real = chunked.selective_scan_chunked

    def timed_scan(*args, **kwargs):
        t0 = time.perf_counter()
        out = real(*args, **kwargs)
        scan_s.append(time.perf_counter() - t0)
        node, started = out.grad_fn, []
        if node is not None:
            node.register_prehook(lambda grads: started.append(time.perf_counter()))
            node.register_hook(lambda gin, gout: scan_s.append(time.perf_counter() - started.pop()))
        return out

    chunked.selective_scan_chunked = timed_scan

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (model(batch) - target).abs().mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    steps, shares = [], []
    deadline = time.perf_counter() + spec["budget_s"]
    while len(steps) < spec["min_reps"] or (time.perf_counter() < deadline and len(steps) < spec["max_reps"]):
        scan_s.clear()
        t0 = time.perf_counter()
        step()
        steps.append(time.perf_counter() - t0)
        shares.append(sum(scan_s))
    med = statistics.median(steps)
    scan = statistics.median(shares)
    return dict(ms=1e3 * med, scan_ms=1e3 * scan, share=scan / med if spec["backend"] != "reference" else None,
                reps=len(steps))


def measure(op, backend, mode, size, dtype="float32", budget_s=6.0, min_reps=3, max_reps=15, timeout=1800) -> dict:
    spec = dict(op=op, backend=backend, mode=mode, size=size, dtype=dtype, budget_s=budget_s, min_reps=min_reps,
                max_reps=max_reps)
    return run_worker(Path(__file__).resolve(), spec, timeout=timeout)


# ------------------------------------------------------------------------------------------ CPU section


def _reference_estimate(op: str, size: dict, mode: str) -> float:
    """Bytes the reference is expected to add (measured here: ~3 N x N float32 tensors per head for
    attention fwd+bwd; ~36 floats per state element for the scan's autograd graph)."""
    if op == "attention":
        nn = size["batch"] * size["heads"] * size["N"] ** 2 * 4
        return (3.2 if mode == "fwd+bwd" else 2.2) * nn
    states = size["batch"] * size["d"] * size["n"] * size["L"] * 4
    return (9.0 if mode == "fwd+bwd" else 1.0) * states


def _fmt(r: dict | None, key: str, digits: int = 1) -> str:
    if r is None:
        return "-"
    if "error" in r or "skipped" in r:
        return "n/a"
    return f"{r[key]:,.{digits}f}"


def _ratio(num: dict | None, den: dict | None, key: str, invert: bool = False) -> str:
    if not num or not den or any(k in x for x in (num, den) for k in ("error", "skipped")):
        return "-"
    a, b = (den[key], num[key]) if invert else (num[key], den[key])
    return f"{a / b:.2f}x" if b > 0 else "-"


def _run_table(op: str, rows: list[tuple[str, dict]], backends: list[str], quick: bool, notes: list[str]):
    """Measure every (row size, backend, mode); returns {(label, backend, mode): result}."""
    results = {}
    for label, size in rows:
        for backend in backends:
            for mode in ("fwd", "fwd+bwd"):
                if backend == "reference":
                    need = _reference_estimate(op, size, mode)
                    avail = mem_available()
                    if need > MEMORY_SAFETY * avail:
                        results[label, backend, mode] = dict(skipped=True)
                        notes.append(f"{op} {label} reference {mode}: skipped, needs ~{need / 2**30:.1f} GiB and "
                                     f"{avail / 2**30:.1f} GiB were available")
                        continue
                budget = 2.0 if quick else 6.0
                r = measure(op, backend, mode, size, budget_s=budget, min_reps=2 if quick else 3)
                if "error" in r:
                    notes.append(f"{op} {label} {backend} {mode}: {r['error']}")
                results[label, backend, mode] = r
                print(f"{op:9s} {label:28s} {backend:9s} {mode:8s} {r}", flush=True)
    return results


def _table(rows, backends, results) -> list[str]:
    out = [
        "| size | backend | fwd ms | fwd peak MiB | fwd+bwd ms | fwd+bwd peak MiB | "
        "fwd+bwd speed vs reference | fwd+bwd memory vs reference |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _ in rows:
        ref = results.get((label, "reference", "fwd+bwd"))
        for backend in backends:
            f, fb = results.get((label, backend, "fwd")), results.get((label, backend, "fwd+bwd"))
            speed = _ratio(fb, ref, "ms", invert=True) if backend != "reference" else "1x"
            mem = _ratio(fb, ref, "peak_mib") if backend != "reference" else "1x"
            if ref and "skipped" in ref and backend != "reference":
                speed = mem = "reference skipped"
            out.append(f"| {label} | {backend} | {_fmt(f, 'ms')} | {_fmt(f, 'peak_mib')} | {_fmt(fb, 'ms')} | "
                       f"{_fmt(fb, 'peak_mib')} | {speed} | {mem} |")
    return out


def cpu_section(quick: bool) -> str:
    notes: list[str] = []
    load0 = os.getloadavg()
    started = time.time()
    Ls = [256, 1024] if quick else SCAN_L
    scan_rows = [(f"L={L}", {**SCAN_SIZE, "L": L}) for L in Ls]
    model_scan = dict(MODEL_SCAN, batch=256) if quick else MODEL_SCAN
    scan_rows.append((f"batch={model_scan['batch']} d={model_scan['d']} L={model_scan['L']}", model_scan))
    scan = _run_table("scan", scan_rows, ["reference", "chunked"], quick, notes)

    Ns = [256, 1024] if quick else ATTN_N
    attn_rows = [(f"N={N}", {**ATTN_SIZE, "N": N}) for N in Ns]
    attn = _run_table("attention", attn_rows, ["reference", "sdpa"], quick, notes)

    big_n = 2048 if quick else LARGE_GRAPH_N
    big_rows = [(f"N={big_n}, 10% keys masked", {**ATTN_SIZE, "N": big_n, "mask": 0.1})]
    big = _run_table("attention", big_rows, ["reference", "sdpa"], quick, notes)
    model_size = dict(batch=4, nodes=50, window=12, d_model=32, layers=2) if quick else MODEL_STEP
    model = {}
    for backend in ("auto", "reference"):
        r = measure("model", backend, "step", model_size, budget_s=10.0 if not quick else 2.0, min_reps=3)
        if "error" in r:
            notes.append(f"model step ({backend}): {r['error']}")
        model[backend] = r
        print(f"model     {backend:9s} {r}", flush=True)
    load1 = os.getloadavg()

    b = SCAN_SIZE
    lines = [
        f"Machine: {machine()}.",
        f"Command: `python scripts/bench_kernels.py{' --quick' if quick else ''}` "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {(time.time() - started) / 60:.0f} min; "
        f"load average {load0[0]:.2f} before, {load1[0]:.2f} after, on {os.cpu_count()} cores).",
        "",
        "Method: each cell is one fresh subprocess; time = median wall time of the repeated runs; peak = the "
        "process's high-water resident memory minus its resident memory just before the first run (what the op "
        "adds to its inputs), after a warm-up of the same op on a tiny problem. `fwd` = inference (no_grad); "
        "`fwd+bwd` = forward with autograd plus backward into every input. Ratios: same run; speed = reference "
        "time / backend time, memory = backend peak / reference peak. The Triton backend is not timed on a CPU "
        "(its interpreter is for correctness only).",
        "",
        f"### Selective scan (batch={b['batch']}, d={b['d']}, n={b['n']}, float32; D, z and delta_bias on)",
        "",
        "The last row has the shape the STLM model gives the scan: nodes folded into the batch, a 12-step window.",
        "",
        *_table(scan_rows, ["reference", "chunked"], scan),
        "",
        f"### Global attention (batch={ATTN_SIZE['batch']}, {ATTN_SIZE['heads']} heads, "
        f"d_head={ATTN_SIZE['d_head']}, float32, no mask)",
        "",
        *_table(attn_rows, ["reference", "sdpa"], attn),
        "",
        f"### Attention training step over a large sensor graph (N={big_n})",
        "",
        "A LargeST-CA-sized graph: one (batch, time) slice, 8 heads, d_head=64, a key padding mask for missing "
        "sensors. The reference holds N x N float32 scores, softmax weights and their gradient per head; SDPA's "
        "CPU kernel is flash-style (tiles of keys, online softmax) and never holds an N x N matrix.",
        "",
        *_table(big_rows, ["reference", "sdpa"], big),
    ]
    ms = model_size
    lines += [
        "",
        f"### Share of an STLM training step spent in the scan (batch={ms['batch']}, N={ms['nodes']} sensors, "
        f"window={ms['window']}, d_model={ms['d_model']}, {ms['layers']} layers, d_state=16, expand=2)",
        "",
        "One optimizer step (forward, L1 loss, backward, Adam) of the full model on random data; "
        "the scan's forward and backward are timed inside the step (around the backend call and between hooks "
        "on its autograd node).",
        "",
        "| kernels | step ms | scan ms (fwd+bwd, all layers) | scan share of the step |",
        "|---|---:|---:|---:|",
    ]
    for backend, r in model.items():
        if "error" in r:
            lines.append(f"| {backend} | n/a | n/a | n/a |")
            continue
        share = f"{100 * r['share']:.0f}%" if r.get("share") is not None else "-"
        scan_ms = f"{r['scan_ms']:,.0f}" if r.get("share") is not None else "-"
        name = "auto (chunked scan, sdpa)" if backend == "auto" else "reference (both ops)"
        lines.append(f"| {name} | {r['ms']:,.0f} | {scan_ms} | {share} |")
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ GPU section


def _scan_bytes(size: dict, itemsize: int, mode: str) -> int:
    """Bytes that must move: forward reads u, delta, z, B, C and writes out; the backward reads u, delta, z,
    B, C and dout, writes du, ddelta, dz and (float32) dB, dC. Parameters and states are negligible."""
    b, d, n, L = size["batch"], size["d"], size["n"], size["L"]
    series, maps = b * d * L, b * n * L
    fwd = (4 * series + 2 * maps) * itemsize
    bwd = (7 * series + 2 * maps) * itemsize + 2 * maps * 4
    return fwd if mode == "fwd" else fwd + bwd


def _gpu_time(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def _gpu_measure(op: str, backend: str, size: dict, dtype, mode: str) -> dict:
    import torch

    fn = _op(op, backend)
    inputs = _inputs(op, size, "cuda", dtype, mode == "fwd+bwd")
    _step(fn, inputs, mode)  # compile, autotune
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _step(fn, inputs, mode)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    ms = _gpu_time(lambda: _step(fn, inputs, mode))
    return dict(ms=ms, peak_mib=peak)


def gpu_section(quick: bool) -> str:
    import torch
    import triton

    name = torch.cuda.get_device_name()
    lines = [
        f"Machine: {name}; torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}.",
        f"Command: `python scripts/bench_kernels.py --gpu{' --quick' if quick else ''}` "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC), via `scripts/device_check.sh`.",
        "",
        "Method: CUDA-event median times (`triton.testing.do_bench`) after a first call that compiles and "
        "autotunes; peak memory = `torch.cuda.max_memory_allocated` above the inputs. Bandwidth counts only the "
        "bytes that must move (inputs read once, outputs written once) against the H200's 4.8 TB/s.",
        "",
    ]
    # Selective scan: Triton vs chunked.
    size = dict(batch=8, d=1024, n=16, L=8192) if not quick else dict(batch=2, d=256, n=16, L=2048)
    lines += [f"### Selective scan (batch={size['batch']}, d={size['d']}, n={size['n']}, L={size['L']})", "",
              "| dtype | backend | mode | ms | GB/s by bytes that must move | % of 4.8 TB/s | peak MiB | "
              "triton speed-up vs chunked |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for dtype in (torch.float32, torch.bfloat16):
        for mode in ("fwd", "fwd+bwd"):
            res = {}
            for backend in ("triton", "chunked"):
                try:
                    res[backend] = _gpu_measure("scan", backend, size, dtype, mode)
                except Exception as e:  # noqa: BLE001 (a failed cell is reported, the rest still runs)
                    res[backend] = dict(error=f"{type(e).__name__}: {e}"[:160])
            for backend, r in res.items():
                if "error" in r:
                    lines.append(f"| {dtype} | {backend} | {mode} | {r['error']} | | | | |")
                    continue
                gbs = _scan_bytes(size, torch.finfo(dtype).bits // 8, mode) / (r["ms"] * 1e-3) / 1e9
                speed = _ratio(res["triton"], res["chunked"], "ms", invert=True) if backend == "triton" else ""
                lines.append(f"| {str(dtype)[6:]} | {backend} | {mode} | {r['ms']:.2f} | {gbs:,.0f} | "
                             f"{100 * gbs * 1e9 / H200_BANDWIDTH:.0f}% | {r['peak_mib']:,.0f} | {speed} |")
    # Attention: Triton vs SDPA's flash backend.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    lines += ["", "### Global attention (bfloat16, 8 heads, d_head=64, batch 4, no mask)", "",
              "| N | backend | mode | ms | TFLOP/s | triton / SDPA-flash throughput | peak MiB | peak bytes / N |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for N in ([1024, 2048] if quick else [2048, 4096, 8192, 16384]):
        att = dict(batch=4, heads=8, d_head=64, N=N)
        for mode in ("fwd", "fwd+bwd"):
            res = {}
            for backend in ("triton", "sdpa"):
                try:
                    if backend == "sdpa":
                        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                            res[backend] = _gpu_measure("attention", backend, att, torch.bfloat16, mode)
                    else:
                        res[backend] = _gpu_measure("attention", backend, att, torch.bfloat16, mode)
                except Exception as e:  # noqa: BLE001
                    res[backend] = dict(error=f"{type(e).__name__}: {e}"[:160])
            flops = 4 * att["batch"] * att["heads"] * N * N * att["d_head"] * (1.0 if mode == "fwd" else 3.5)
            for backend, r in res.items():
                if "error" in r:
                    lines.append(f"| {N} | {backend} | {mode} | {r['error']} | | | | |")
                    continue
                ratio = _ratio(res["triton"], res["sdpa"], "ms", invert=True) if backend == "triton" else ""
                lines.append(f"| {N} | {backend} | {mode} | {r['ms']:.2f} | {flops / (r['ms'] * 1e-3) / 1e12:.0f} | "
                             f"{ratio} | {r['peak_mib']:,.0f} | {r['peak_mib'] * 2**20 / N:,.0f} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ output file


GPU_PENDING = """Not measured yet: no GPU was available where this file was last written. On a machine with a CUDA
GPU, `OUT=<dir> bash scripts/device_check.sh` runs the GPU tests and `scripts/bench_kernels.py --gpu`, which
writes this section to `<dir>/benchmarks_gpu.md` (Triton vs chunked scan at batch=8, d=1024, n=16, L=8192 with
achieved bandwidth against the H200's 4.8 TB/s; Triton vs SDPA flash attention at N up to 16384, d_head=64,
8 heads, bfloat16, with throughput and peak memory per token); paste it here.
"""


def write_section(path: Path, name: str, title: str, body: str) -> None:
    _write_section(path, "bench_kernels", name, title, body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--gpu", action="store_true", help="only the GPU section (needs CUDA)")
    p.add_argument("--cpu", action="store_true", help="only the CPU section")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(model_worker(spec) if spec["op"] == "model" else worker(spec)))
        return 0
    import torch

    if not args.gpu:
        write_section(args.output, "cpu", "Kernels (CPU)", cpu_section(args.quick))
        print(f"wrote the CPU section of {args.output}")
    if not args.cpu:
        if torch.cuda.is_available():
            write_section(args.output, "gpu", "Kernels (GPU)", gpu_section(args.quick))
            print(f"wrote the GPU section of {args.output}")
        elif args.gpu:
            print("no CUDA device: the GPU section needs one (scripts/device_check.sh on a GPU machine)")
            return 1
        elif not has_section(args.output, "bench_kernels", "gpu"):  # never overwrite figures measured on a GPU
            write_section(args.output, "gpu", "Kernels (GPU)", GPU_PENDING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
