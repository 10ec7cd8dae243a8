"""MLflow tracking: where runs go, how they are tagged, and how a resumed run finds its MLflow run again.

Defaults (MLflow 3.x refuses a bare ``./mlruns`` file store unless opted in):

* tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db``;
* artifacts of a SQLite store: ``<directory of the .db>/mlartifacts`` (set explicitly when the experiment is
  created, so artifacts never land in an unexpected relative folder);
* the store is initialised once before training (a fresh SQLite DB races when several processes create it:
  creation holds a file lock, ``<db>.lock``, so parallel jobs started at once wait for each other);
* an unreachable store fails before any data is read, in seconds: a refused server is probed with a short
  timeout, and a SQLite file that cannot be created is opened once directly (MLflow itself retries for
  about 100 s before giving up). Training never starts without its tracking store: ``logger=none`` trains
  without one.

The URI is always passed explicitly to Lightning's ``MLFlowLogger``, which otherwise reads the environment
variable when it is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Set on a run once everything (metrics, artifacts, registration) was logged: a sweep rerun skips such runs.
COMPLETE_TAG = "stlm.complete"
# Keys of conf/train.yaml that change where or whether a run happens, not its result: not part of the hash.
NOT_HASHED = ("ckpt_path", "paths", "run_name", "hydra", "sweep_id", "skip_finished", "register")


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The URI to use: the argument, else ``MLFLOW_TRACKING_URI``, else a SQLite file in the working directory."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    return uri


def default_artifact_location(tracking_uri: str) -> str | None:
    """``<db dir>/mlartifacts`` for a SQLite store; None (the server's default) for other stores."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def _probe_server(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """Fail within seconds when nothing answers at an MLflow server URI."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        pass  # something answers (a proxy, an auth layer): let the MLflow client report what it says
    except OSError as err:
        raise RuntimeError(
            f"MLflow tracking store {tracking_uri!r} is not reachable ({type(err).__name__}: {err}). Start the "
            "server (mlflow server --host 127.0.0.1 --port ...), fix MLFLOW_TRACKING_URI / logger.tracking_uri, "
            "or run with logger=none"
        ) from err


def _probe_sqlite(db: Path, tracking_uri: str) -> None:
    """Fail at once when the SQLite file cannot be created or opened (MLflow retries for ~100 s first)."""
    import sqlite3

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
            conn.execute("PRAGMA schema_version").fetchone()
    except (OSError, sqlite3.Error) as err:
        raise RuntimeError(
            f"MLflow tracking store {tracking_uri!r} cannot be opened ({type(err).__name__}: {err}). Point it at a "
            "writable directory (MLFLOW_TRACKING_URI=sqlite:///<dir>/mlflow.db or logger.tracking_uri=...), or "
            "run with logger=none"
        ) from err


@contextlib.contextmanager
def _creation_lock(db: Path):
    """An exclusive lock on ``<db>.lock`` while the store is created or migrated (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_store(tracking_uri: str) -> None:
    """Create (or migrate) the tracking store once, and fail fast with a clear message if it is unreachable."""
    from mlflow.tracking import MlflowClient

    lock = contextlib.nullcontext()
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        _probe_sqlite(db, tracking_uri)
        lock = _creation_lock(db)
    if tracking_uri.startswith(("http://", "https://")):
        _probe_server(tracking_uri)  # MLflow's own client retries a refused connection for minutes
    try:
        with lock:
            MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as err:  # mlflow raises several types (MlflowException, requests errors)
        raise RuntimeError(
            f"MLflow tracking store {tracking_uri!r} is not reachable ({type(err).__name__}: {err}). Start the "
            "server, fix MLFLOW_TRACKING_URI / logger.tracking_uri, or run with logger=none"
        ) from err


def tracking_uri_of(cfg: DictConfig) -> str | None:
    """The tracking URI a training config logs to, or None for ``logger=none``."""
    logger = cfg.get("logger")
    if not logger or str(logger.get("_target_", "")).endswith("no_logger"):
        return None
    return resolve_tracking_uri(logger.get("tracking_uri"))


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created if missing; safe when parallel jobs create it at the same time."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for attempt in range(3):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ValueError(f"experiment={name!r} is deleted in {tracking_uri}: restore it (mlflow experiments "
                                 "restore) or choose another experiment name")
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location or default_artifact_location(tracking_uri))
        except Exception:  # another job created it between our lookup and create: look it up again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def reproducibility_tags() -> dict[str, str]:
    """Library versions and the CPU thread count (CPU results depend on how reductions are split over threads)."""
    import platform

    import mlflow
    import numpy
    import pytorch_lightning
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "lightning": pytorch_lightning.__version__,
        "mlflow": mlflow.__version__, "numpy": numpy.__version__, "torch_threads": str(torch.get_num_threads()),
    }


def mlflow_logger(
    experiment_name: str,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    artifact_location: str | None = None,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
):
    """A Lightning ``MLFlowLogger`` on an initialised store (``run_id`` resumes an existing run)."""
    from pytorch_lightning.loggers import MLFlowLogger

    uri = resolve_tracking_uri(tracking_uri)
    ensure_store(uri)
    ensure_experiment(uri, experiment_name, artifact_location)
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        tags=tags,
        artifact_location=artifact_location or default_artifact_location(uri),
        run_id=run_id,
        log_model=False,
    )


def no_logger(**_: Any) -> None:
    """``logger=none``: train without experiment tracking."""
    return None


def flatten_config(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """``{"model.d_model": "64", ...}`` for MLflow params (lists are kept as their string form)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, str] = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def config_hash(cfg: DictConfig, ignore: tuple[str, ...] = NOT_HASHED) -> str:
    """Hash of the resolved configuration minus keys that do not change the result (paths, resume flags)."""
    container = OmegaConf.to_container(cfg, resolve=False)
    for key in ignore:
        container.pop(key, None)
    return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_sha(cwd: str | Path | None = None) -> str:
    """The commit of the stlm checkout (``unknown`` outside a git checkout)."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        sha = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
