"""Preemption (SIGTERM): save where training stopped, mark the MLflow run KILLED, exit 143.

Schedulers (SLURM, Kubernetes, spot instances) stop a job with SIGTERM and, after a grace period, SIGKILL.
Lightning 2.6 already catches SIGTERM inside ``trainer.fit``/``test``: it finishes the current batch and raises
``SIGTERMException`` -- a ``SystemExit`` with no code, so the process would exit **0** and a scheduler would
think the job succeeded, with nothing saved since the last epoch. Here:

* :class:`SaveOnPreemption` writes ``last.ckpt`` (mid-epoch, after the batch that was running) when a fit
  stops that way, so ``ckpt_path=last`` resumes from there;
* :func:`sigterm_outside_lightning` turns a SIGTERM that arrives outside Lightning's loops (data loading,
  baselines, logging) into :class:`Preempted` at once -- inside the loops it defers to Lightning, which
  stops at a batch boundary so the weights are never saved half-updated;
* ``stlm.train.run`` turns both into :class:`Preempted` (exit code 143 = 128 + SIGTERM, what a shell reports
  for a process killed by SIGTERM) after marking the MLflow run ``KILLED``.

A requeued job reruns the same command with ``ckpt_path=last`` (see ``scripts/slurm_train.sbatch``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Iterator

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger("stlm.train.preemption")

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143


class Preempted(SystemExit):
    """The run was stopped by SIGTERM; exits the process with code 143 (not 0) so schedulers see it."""

    def __init__(self, message: str):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_preemption(err: BaseException) -> bool:
    return isinstance(err, (SIGTERMException, Preempted))


class SaveOnPreemption(pl.Callback):
    """On Lightning's SIGTERM stop during ``fit``, save ``<checkpoint_dir>/last.ckpt`` (every rank calls
    ``save_checkpoint``; rank 0 writes). Other exceptions save nothing: a non-finite loss must not leave a
    checkpoint behind, and best.ckpt is never touched."""

    def __init__(self, checkpoint_dir: str | Path):
        self.path = Path(checkpoint_dir) / "last.ckpt"
        self.saved: Path | None = None

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path)
        self.saved = self.path
        if trainer.is_global_zero:
            log.warning("SIGTERM: saved %s at epoch %d, global step %d; rerun with ckpt_path=last to resume",
                        self.path, trainer.current_epoch, trainer.global_step)


@contextlib.contextmanager
def sigterm_outside_lightning() -> Iterator[None]:
    """While active, a SIGTERM raises :class:`Preempted` -- unless Lightning's own handler is installed (it
    composes this one into its own, and we then leave the stop to it: see the module docstring)."""

    def handler(signum, frame):
        if signal.getsignal(signal.SIGTERM) is not handler:
            return  # inside trainer.fit/test: Lightning stops at the end of the current batch
        message = "preempted (SIGTERM) outside training: stopped at once; exit code 143"
        print(message, file=sys.stderr, flush=True)
        raise Preempted(message)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
