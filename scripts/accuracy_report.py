"""Train STLM and the baselines on one data set under one protocol and write the table to docs/accuracy.md.

Each model runs through the real entry point (``python -m stlm.train``) in its own process, so the figures are
exactly what a user gets; wall time per run is measured around the whole process (data, training, test).

    python scripts/accuracy_report.py --name traffic
    python scripts/accuracy_report.py --name hangzhou_metro --models stlm linear graph_wavenet \
        -- dataset=hangzhou_metro dataset.path=../shared/data/traffic/hangzhou_metro/hangzhou_metro.npz \
           dataset.adjacency=../shared/data/traffic/hangzhou_metro/graph.csv

Arguments after ``--`` are Hydra overrides given to every run. Results replace the section named ``--name``
in docs/accuracy.md (other sections are kept).

``--quantiles default`` (or a list such as ``[0.05,0.5,0.95]``) trains every model with ``model.quantiles`` and
writes the probabilistic table instead: CRPS per horizon, coverage and width of the 90% interval, and the MAE of
the median; each run's reference baselines (the data set's ``baselines``, with bands from their training
residuals) are rows of the same table, scored on the same test windows:

    python scripts/accuracy_report.py --name "traffic, probabilistic" --quantiles default --models stlm

``--ensemble M`` trains with ``model.ensemble=M`` instead (MC dropout members; give ``model.dropout`` after
``--``) and writes the same table from the fair ensemble CRPS; the baselines, point models then, are left out:

    python scripts/accuracy_report.py --name "traffic, ensemble" --ensemble 16 --models stlm -- model.dropout=0.1
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


def train(model: str, overrides: list[str], workdir: Path, with_baselines: bool = False):
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
    if with_baselines:
        return record["test_metrics"], seconds, record.get("baseline_metrics", {})
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


def key_suffixes(metrics: dict, horizons: list[int] | None) -> list[str]:
    """The per-horizon key suffixes to show: ``h3`` for the chosen horizons of sensor keys, else the reported
    leads (a quarter, half and all of the horizon) of lead keys (``lead6h``)."""
    from stlm.metrics.horizon import summary_columns

    if "crps_h1" in metrics:
        return [f"h{h}" for h in horizons]
    return summary_columns(metrics)[1]


def probabilistic_section(name: str, rows: dict[str, tuple[dict, float]], command: str, horizons: list[int]) -> str:
    first = next(iter(rows.values()))[0]
    suffixes = key_suffixes(first, horizons)
    label = lambda s: s.removeprefix("lead").removeprefix("h")
    point = "rmse" if suffixes[0].startswith("lead") else "mae"  # what each field reports: RMSE for grids (WeatherBench)
    cols = ([f"CRPS@{label(s)}" for s in suffixes] + ["CRPS avg"] + [f"cov90@{label(s)}" for s in suffixes]
            + ["cov90 avg", "width90 avg", f"{point.upper()}@{label(suffixes[-1])} (median)", f"{point.upper()} avg (median)",
               "time (s)"])
    lines = [f"## {name}", "", f"Command: `{command}`",
             f"Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores; {time.strftime('%Y-%m-%d')}. Test split, "
             "original units (grids: latitude-weighted). " + (
                 "CRPS from the 19 quantiles 0.05 .. 0.95 (2 x mean pinball loss); cov90 = share of observed targets "
                 "inside the 0.05 .. 0.95 band (nominal 0.90)" if "pinball_avg" in first else
                 "Fair CRPS of the ensemble members (WeatherBench 2's estimator); cov90 = share of observed targets "
                 "inside the members' empirical 0.05 .. 0.95 quantiles (nominal 0.90)") +
             "; width90 its mean width; the point metric scores the median. Baseline rows: bands from the empirical "
             "quantiles of their training residuals per horizon and token; time = the whole run that scored them.", "",
             "| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for model, (m, seconds) in rows.items():
        cells = [f"{m[f'crps_{s}']:.3f}" for s in suffixes] + [f"{m['crps_avg']:.3f}"]
        cells += [f"{m[f'coverage90_{s}']:.3f}" for s in suffixes] + [f"{m['coverage90_avg']:.3f}", f"{m['width90_avg']:.3f}"]
        cells += [f"{m[f'{point}_{suffixes[-1]}']:.3f}", f"{m[f'{point}_avg']:.3f}", f"{seconds:.0f}"]
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
    parser.add_argument("--quantiles", default=None, help="train with model.quantiles=VALUE and write the probabilistic table")
    parser.add_argument("--ensemble", type=int, default=None, help="train with model.ensemble=M and write the probabilistic table")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()
    overrides = absolute_paths(args.overrides)
    if args.quantiles is not None or args.ensemble is not None:
        switch = f"--quantiles {args.quantiles}" if args.quantiles is not None else f"--ensemble {args.ensemble}"
        override = f"model.quantiles={args.quantiles}" if args.quantiles is not None else f"model.ensemble={args.ensemble}"
        command = " ".join(["python scripts/accuracy_report.py", f"--name {json.dumps(args.name)}", switch,
                            "--models", *args.models] + (["--", *args.overrides] if args.overrides else []))
        rows = {}
        with tempfile.TemporaryDirectory(prefix="stlm-accuracy-") as tmp:
            for model in args.models:
                test, seconds, baselines = train(model, [*overrides, override], Path(tmp), True)
                rows[model] = (test, seconds)
                rows.update({f"{name} (residual bands)": (m, seconds) for name, m in baselines.items() if "crps_avg" in m})
                print(f"{model}: CRPS avg {test['crps_avg']:.3f}, coverage90 {test['coverage90_avg']:.3f} ({seconds:.0f} s)", flush=True)
        write_section(args.name, probabilistic_section(args.name, rows, command, args.horizons))
        print(f"wrote section {args.name!r} of {DOC}")
        return
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
