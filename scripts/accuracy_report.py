"""Train STLM and the baselines on one data set under one protocol and write the table to docs/accuracy.md.

Each model runs through the real entry point (``python -m stlm.train``) in its own process, so the figures are
exactly what a user gets; wall time per run is measured around the whole process (data, training, test).

    python scripts/accuracy_report.py --name traffic
    python scripts/accuracy_report.py --name hangzhou_metro --models stlm linear graph_wavenet \
        -- dataset=hangzhou_metro dataset.path=../shared/data/traffic/hangzhou_metro/hangzhou_metro.npz \
           dataset.adjacency=../shared/data/traffic/hangzhou_metro/graph.csv

Arguments after ``--`` are Hydra overrides given to every run. Results replace the section named ``--name``
in docs/accuracy.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_common import cpu_name  # noqa: E402

DOC = REPO / "docs" / "accuracy.md"
FITTED = ("last_value", "historical_average", "seasonal_naive")


def absolute_paths(overrides: list[str]) -> list[str]:
    """Make file overrides absolute: every run starts in its own temporary directory."""
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.endswith((".path", ".adjacency")) and value not in ("null", ""):
            override = f"{key}={Path(value).resolve()}"
        out.append(override)
    return out


def train(model: str, overrides: list[str], workdir: Path) -> tuple[dict, float]:
    # Run directories live below runs/: a folder named after a model (stlm/) in the working directory would
    # shadow the package for ``python -m``.
    run_dir = workdir / "runs" / model
    cmd = [sys.executable, "-m", "stlm.train", f"model={model}", f"paths.output_dir={run_dir}",
           f"paths.outputs_root={workdir / 'runs'}", "logger=none", "+trainer.enable_progress_bar=false", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    record = json.loads((run_dir / "run.json").read_text())
    return record["test_metrics"], seconds


def section(name: str, rows: dict[str, tuple[dict, float]], overrides: list[str], horizons: list[int]) -> str:
    cols = [f"MAE@{h}" for h in horizons] + ["MAE avg"] + [f"RMSE@{h}" for h in horizons] + [f"MAPE@{h} %" for h in horizons] + ["time (s)"]
    lines = [f"## {name}", "", f"Command: `python scripts/accuracy_report.py --name {name} --models {' '.join(rows)}"
             + (f" -- {' '.join(overrides)}`" if overrides else "`"),
             f"Machine: {cpu_name()}, "
             f"{len(os.sched_getaffinity(0))} cores; {time.strftime('%Y-%m-%d')}. Test split, original units; "
             "@h = horizon h steps ahead; time = whole run (data, training, test).", "",
             "| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for model, (m, seconds) in rows.items():
        cells = [f"{m[f'mae_h{h}']:.3f}" for h in horizons] + [f"{m['mae_avg']:.3f}"]
        cells += [f"{m[f'rmse_h{h}']:.3f}" for h in horizons] + [f"{m[f'mape_h{h}']:.2f}" for h in horizons]
        cells.append(f"{seconds:.0f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_section(name: str, text: str) -> None:
    DOC.parent.mkdir(exist_ok=True)
    old = DOC.read_text() if DOC.exists() else "# Accuracy\n\nWritten by `scripts/accuracy_report.py`.\n\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    DOC.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="section name in docs/accuracy.md")
    parser.add_argument("--models", nargs="+", default=["stlm", "linear", "last_value", "historical_average"])
    parser.add_argument("--horizons", nargs="+", type=int, default=[3, 6, 12])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()
    overrides = absolute_paths(args.overrides)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="stlm-accuracy-") as tmp:
        for model in args.models:
            rows[model] = train(model, overrides, Path(tmp))
            print(f"{model}: MAE avg {rows[model][0]['mae_avg']:.3f}, MAE@{args.horizons[-1]} "
                  f"{rows[model][0][f'mae_h{args.horizons[-1]}']:.3f} ({rows[model][1]:.0f} s)", flush=True)
    write_section(args.name, section(args.name, rows, args.overrides, args.horizons))
    print(f"wrote section {args.name!r} of {DOC}")


if __name__ == "__main__":
    main()
