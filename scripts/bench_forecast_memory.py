"""Benchmark: peak memory of a forecast job against the number of init times (issue: bounded by the chunk).

    python scripts/bench_forecast_memory.py [--workdir /tmp/stlm_bench_forecast] [--write-docs]

1. Trains (once, cached in the workdir) a short run of the default STLM on the embedded traffic default
   (200 sensors, 28 days at 5 minutes), ``logger=none``.
2. In fresh subprocesses (so each peak resident memory, VmHWM, is one job's alone), forecasts every
   10th window of the whole series and then every window (10x more init times) into netCDF with the default
   ``chunk_size``; and, as the same-run baseline, every window in one chunk (what a job that holds the period
   in memory costs).

With ``--write-docs`` the table replaces this script's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_common import machine, run_worker, write_section  # noqa: E402

CONF = REPO / "conf"


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def train(workdir: Path) -> Path:
    checkpoint = workdir / "run" / "checkpoints" / "best.ckpt"
    if checkpoint.exists():
        return checkpoint
    from stlm.train import run

    cfg = _compose("train", ["logger=none", "trainer.max_epochs=1", "+trainer.limit_train_batches=20",
                             "+trainer.limit_val_batches=5", "+trainer.enable_progress_bar=false",
                             f"paths.outputs_root={workdir}", f"paths.output_dir={workdir / 'run'}"])
    run(cfg)
    return checkpoint


def _vm_hwm() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over from the parent at
    fork, so a worker started by a process that trained a model would report the trainer's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def worker(spec: dict) -> dict:
    from stlm.forecast import run_forecast

    output = Path(spec["output"])
    start = time.perf_counter()
    job = run_forecast(_compose("forecast", [f"checkpoint={spec['checkpoint']}", f"output={output}", "progress=false",
                                             "overwrite=true", "init_times.split=all", f"init_times.every={spec['every']}",
                                             f"chunk_size={spec['chunk_size']}"]))
    seconds = time.perf_counter() - start
    peak = _vm_hwm()
    return {"init_times": job["n_init_times"], "chunks": job["n_chunks"], "seconds": seconds, "peak_rss": peak,
            "file_bytes": output.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stlm_bench_forecast"))
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = train(args.workdir)
    cases = [("every 10th window", 10, args.chunk_size), ("every window (10x)", 1, args.chunk_size),
             ("every window, one chunk (baseline)", 1, 10**7)]
    rows = []
    for label, every, chunk in cases:
        spec = {"checkpoint": str(checkpoint), "output": str(args.workdir / f"forecasts_{every}_{chunk}.nc"),
                "every": every, "chunk_size": chunk}
        result = run_worker(Path(__file__), spec)
        if "error" in result:
            raise SystemExit(f"{label}: {result['error']}")
        rows.append((label, chunk, result))
        print(label, result, flush=True)
    base = rows[0][2]["peak_rss"]
    lines = ["| job | init times | chunk size | peak RSS (MiB) | vs 10x fewer | wall (s) | file (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, chunk, r in rows:
        lines.append(f"| {label} | {r['init_times']:,} | {chunk if chunk < 10**7 else 'all'} | {r['peak_rss'] / 2**20:,.0f} | "
                     f"{r['peak_rss'] / base:.2f}x | {r['seconds']:.1f} | {r['file_bytes'] / 2**20:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        body = (f"Machine: {machine()}. Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} "
                f"python scripts/bench_forecast_memory.py --write-docs`.\n\nA forecast job of the default STLM "
                "(embedded traffic default, 200 sensors, 12 leads) into netCDF, each in a fresh process (peak "
                "resident memory, VmHWM). Memory is bounded by the chunk of init times, not by the period: "
                "10x more init times cost the ratio in the second row; the third row holds the whole period in one "
                f"chunk, for comparison.\n\n{table}\n\n")
        write_section(REPO / "docs" / "benchmarks.md", "bench_forecast_memory", "forecast", "Forecast jobs: memory vs init times", body)


if __name__ == "__main__":
    main()
