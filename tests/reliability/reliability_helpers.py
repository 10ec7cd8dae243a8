"""Subprocess helpers for the fault tests: a tiny ``stlm.train`` command, its environment, waiting for a marker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tiny_runs import TINY_TRAFFIC

HERE = Path(__file__).resolve().parent
FAULT_TRAIN = HERE / "fault_train.py"


def tiny(root: Path, name: str = "run", *extra: str) -> list[str]:
    """Overrides of a seconds-long training writing into ``root/outputs/name`` (``~baselines``: faster)."""
    return [*TINY_TRAFFIC, f"paths.outputs_root={root / 'outputs'}", f"paths.output_dir={root / 'outputs' / name}",
            "~baselines", *extra]


def env(uri: str | None = None, **more: str) -> dict[str, str]:
    """The test process's environment, one torch thread (the CPU is shared), and the tracking URI."""
    out = {**os.environ, "OMP_NUM_THREADS": "1", **more}
    out.pop("HYDRA_FULL_ERROR", None)  # Hydra's compact error messages, as a user sees them
    if uri:
        out["MLFLOW_TRACKING_URI"] = uri
    return out


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "stlm.train", *overrides]


def fault_cmd(step: int, marker: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(FAULT_TRAIN), str(step), str(marker), *overrides]


def wait_for(marker: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Until ``marker`` exists; fails with the process's output if it ends or the time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{marker.name} never appeared (exit code {proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.05)
