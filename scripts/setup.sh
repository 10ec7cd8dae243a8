#!/usr/bin/env bash
# Create .venv (if missing) and install stlm with its test tools; safe to run again (pip then installs nothing).
# torch is installed first and pinned: a bare "torch" requirement can pull a multi-GB CUDA build, while
# torch==2.13.0 takes the CPU wheel on this project's machines (on a GPU machine it takes the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
