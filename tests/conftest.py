"""Shared pytest fixtures.

Without a CUDA device, Triton kernels can only run under Triton's CPU interpreter, and ``triton.jit`` reads
``TRITON_INTERPRET`` when a kernel is decorated (when triton is first imported, which Lightning does early).
This root conftest is imported before any test module, so the variable is set here, once, before anything
imports triton. Nothing outside the triton backend reads it: ``auto`` never picks triton on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``: the real data sets (see its README). Fails, never skips, when absent."""
    path = (REPO_ROOT.parent / "shared" / "data").resolve()
    if not (path / "traffic").is_dir():
        pytest.fail(
            f"real test data not found at {path}: lay the shared/ directory beside the checkout "
            "(../shared/data/traffic/... relative to the repository root)",
            pytrace=False,
        )
    return path


CONF_DIR = REPO_ROOT / "conf"


@pytest.fixture
def compose_train():
    """Compose ``conf/train.yaml`` with overrides, as ``python -m stlm.train`` would (no run directory)."""
    from hydra import compose, initialize_config_dir

    def _compose(overrides: list[str] | None = None, config_name: str = "train"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides or []))

    return _compose


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store in the test's temporary directory (also set as MLFLOW_TRACKING_URI)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


# Small and fast versions of the embedded default, for end-to-end tests on a 2-core CPU.
TINY_TRAFFIC = [
    "dataset.n_nodes=12",
    "dataset.n_days=9",
    "dataset.batch_size=32",
    "model.d_model=16",
    "model.n_layers=1",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "+trainer.enable_progress_bar=false",
]


@pytest.fixture
def tiny_train_overrides(tmp_path) -> list[str]:
    """Overrides for a seconds-long training whose outputs land in the test's temporary directory."""
    return TINY_TRAFFIC + [f"paths.outputs_root={tmp_path / 'outputs'}", f"paths.output_dir={tmp_path / 'outputs' / 'run'}"]
