"""Helpers shared by the benchmark scripts: the machine line, resident memory, subprocess workers and the
marked sections of docs/benchmarks.md that each script rewrites."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = "# Benchmarks\n\nMeasured figures of stlm; each section says how it was produced and how to rerun it.\n"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows (non-Linux machines)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """CPU model, cores, RAM, Python and torch versions, torch threads."""
    import torch

    cpu = cpu_name()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {ram:.1f} GiB RAM; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_worker(script: Path, spec: dict, timeout: float = 1800) -> dict:
    """Run ``script --worker SPEC`` in a fresh process; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout} s")
    if res.returncode != 0:
        return dict(error=(res.stderr.strip().splitlines() or ["failed"])[-1][:200])
    return json.loads(res.stdout.strip().splitlines()[-1])


def has_section(path: Path, tool: str, name: str) -> bool:
    return path.exists() and f"<!-- {tool}:{name}:start -->" in path.read_text()


def write_section(path: Path, tool: str, name: str, title: str, body: str) -> None:
    """Replace the text between the ``<!-- tool:name:start/end -->`` markers (or append the section) in ``path``,
    atomically; the other scripts' sections are left as they are."""
    start, end = f"<!-- {tool}:{name}:start -->", f"<!-- {tool}:{name}:end -->"
    block = f"{start}\n## {title}\n\n{body}{end}\n"
    text = path.read_text() if path.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
