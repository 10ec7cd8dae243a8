"""Run records: what a training run wrote where, so ``ckpt_path=last`` can find and resume it.

Every run writes ``<run dir>/run.json`` (atomically) with its configuration hash, MLflow run id, checkpoint
directory and status. ``ckpt_path=last`` looks under the outputs root for the most recent record with the same
configuration hash that has a ``last.ckpt``, and resumes it: same checkpoint directory, same MLflow run.

A checkpoint is read (``torch.load(weights_only=True)``, memory-mapped) before training resumes from it, so a
truncated or corrupt file, or a pickle that would run code, is refused with its path and the fix -- never a
silent fresh start. For ``ckpt_path=last`` an unreadable ``last.ckpt`` falls back to the run's ``best.ckpt``
with a warning (the epochs after the best one are trained again); a checkpoint file named explicitly is used
or refused, never replaced.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stlm.engines.checkpoints import CheckpointError
from stlm.io.atomic import atomic_write_json

RECORD_NAME = "run.json"


@dataclass
class RunRecord:
    run_dir: str
    config_hash: str
    checkpoint_dir: str
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    status: str = "running"  # running | finished | failed | preempted
    best_checkpoint: str | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # the reference rows, same split

    def save(self) -> Path:
        return atomic_write_json(Path(self.run_dir) / RECORD_NAME, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "RunRecord":
        return cls(**json.loads(Path(path).read_text()))


def find_resumable(outputs_root: str | Path, config_hash: str) -> RunRecord | None:
    """The most recently written run of this configuration that has a ``last.ckpt``, or None."""
    root = Path(outputs_root)
    if not root.exists():
        return None
    candidates = []
    for record_path in root.rglob(RECORD_NAME):
        try:
            record = RunRecord.load(record_path)
        except (OSError, ValueError, TypeError):
            continue  # an unreadable record is not a run we can resume
        if record.config_hash == config_hash and (Path(record.checkpoint_dir) / "last.ckpt").exists():
            candidates.append((record_path.stat().st_mtime, record))
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be loaded as a checkpoint without executing code, or None when it can.

    Memory-mapped, so checking a large checkpoint reads its index, not its tensors."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, another format, a pickle that needs code to load
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        return f"{type(err).__name__}: {first_line}"
    return None


def _resumable_checkpoint(record: RunRecord) -> str:
    """``last.ckpt`` of ``record`` if readable, else its readable ``best.ckpt`` (with a warning), else an error."""
    last = Path(record.checkpoint_dir) / "last.ckpt"
    problem = checkpoint_problem(last)
    if problem is None:
        return str(last)
    best = Path(record.checkpoint_dir) / "best.ckpt"
    if best.is_file() and checkpoint_problem(best) is None:
        warnings.warn(
            f"ckpt_path=last: {last} cannot be read ({problem}); resuming from {best} instead (the best epoch so "
            "far: the epochs after it are trained again). Remove the unreadable last.ckpt to silence this",
            UserWarning, stacklevel=3,
        )
        return str(best)
    raise CheckpointError(
        f"ckpt_path=last: {last} cannot be read ({problem}), and the run has no readable best.ckpt to fall back "
        f"to; nothing was trained. Restore the file from a backup, pass another checkpoint (ckpt_path=FILE), or "
        "run without ckpt_path to start a new run"
    )


def resolve_checkpoint(ckpt_path: str | None, outputs_root: str | Path, config_hash: str) -> tuple[str | None, RunRecord | None]:
    """``(checkpoint file, record of the run it belongs to)`` for ``ckpt_path`` = None, a file, or ``last``."""
    if ckpt_path is None:
        return None, None
    if ckpt_path == "last":
        record = find_resumable(outputs_root, config_hash)
        if record is None:
            raise FileNotFoundError(
                f"ckpt_path=last: no earlier run of this configuration (hash {config_hash}) with a last.ckpt under "
                f"{Path(outputs_root).resolve()}; run without ckpt_path to start fresh, or give a checkpoint file"
            )
        return _resumable_checkpoint(record), record
    path = Path(ckpt_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r}: no checkpoint file at {path}")
    if (problem := checkpoint_problem(path)) is not None:
        raise CheckpointError(
            f"ckpt_path={ckpt_path!r}: {path} cannot be read as a checkpoint ({problem}); nothing was trained and "
            "nothing from the file was executed. Pass a best.ckpt or last.ckpt written by stlm.train, or run "
            "without ckpt_path to start a new run"
        )
    record_path = path.parent.parent / RECORD_NAME
    if not record_path.exists():
        return str(path), None  # a checkpoint from elsewhere: resumed into this new run
    try:
        record = RunRecord.load(record_path)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"ckpt_path={ckpt_path!r}: its run record {record_path} is unreadable ({err}); move the "
                         "checkpoint out of that run directory to resume it as a new run") from err
    if record.config_hash != config_hash:
        raise ValueError(
            f"ckpt_path={ckpt_path!r} belongs to the run in {record.run_dir}, whose configuration (hash "
            f"{record.config_hash}) differs from this one ({config_hash}). Resuming continues the same training: "
            "rerun with that run's configuration (its resolved_config.yaml), or copy the checkpoint out of the "
            "run directory to start a new run from it"
        )
    return str(path), record
