"""Sweeps of ``python -m stlm.train -m ...``: one sweep id, one store initialisation, finished configs skipped.

``python -m stlm.train -m model=stlm,linear,historical_average seed=0,1,2`` runs nine jobs, each its own MLflow run
in one experiment. :class:`SweepCallback` (a Hydra callback, enabled in ``conf/train.yaml``) runs once in the
launching process before any job starts:

* it initialises the tracking store (a fresh SQLite file races when parallel launchers create it at once);
* it fixes the sweep id, tagged ``sweep_id`` on every run of the sweep: ``sweep_id=NAME`` on the command line,
  else a hash of the sweep's overrides, so rerunning the same command continues the same sweep.

A rerun skips configurations that already finished: an active run in the same experiment with the same
``config_hash`` tag, MLflow status ``FINISHED`` and the ``stlm.complete`` tag (set after everything was logged).
``skip_finished=auto`` (the default) skips in a multirun only; ``true``/``false`` force it either way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from omegaconf import DictConfig

from stlm.tracking.store import COMPLETE_TAG, ensure_store, tracking_uri_of

log = logging.getLogger("stlm.tracking.sweeps")

SWEEP_ENV = "STLM_SWEEP_ID"
# Overrides that do not change what a sweep computes (where it writes, how it resumes or skips).
_NOT_PART_OF_THE_SWEEP = ("hydra.", "paths.", "ckpt_path=", "run_name=", "sweep_id=", "skip_finished=", "register=")


def sweep_id_for(overrides: list[str]) -> str:
    """A stable id for the sweep given by these command-line overrides (order does not matter)."""
    kept = sorted(o for o in overrides if not o.lstrip("+~").startswith(_NOT_PART_OF_THE_SWEEP))
    return "sweep-" + hashlib.sha256("\n".join(kept).encode()).hexdigest()[:10]


try:  # hydra is a dependency; the base class only adds no-op hooks
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class SweepCallback(_HydraCallback):
    """Hydra callback: initialise the store and fix the sweep id once, before the jobs of a multirun start."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = config.get("sweep_id") or sweep_id_for(list(config.hydra.overrides.task))
        os.environ[SWEEP_ENV] = str(sweep_id)
        uri = tracking_uri_of(config)
        if uri is not None:
            ensure_store(uri)
        log.info("sweep %s: tracking store %s initialised before the jobs start", sweep_id, uri or "(logger=none)")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(SWEEP_ENV, None)


def should_skip(cfg: DictConfig, in_multirun: bool) -> bool:
    """Whether this run may be skipped when its configuration already finished (see ``skip_finished``)."""
    value = cfg.get("skip_finished", "auto")
    if value in ("auto", None):
        return in_multirun and cfg.get("ckpt_path") is None
    if isinstance(value, bool):
        return value
    raise ValueError(f"skip_finished={value!r}: expected auto, true or false")


def find_finished_run(tracking_uri: str, experiment: str, config_hash: str):
    """The latest completed MLflow run of this configuration in ``experiment`` (an ``mlflow.entities.Run``), or None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED' "
                       f"and tags.`{COMPLETE_TAG}` = 'true'"),
        order_by=["attributes.end_time DESC"], max_results=1,
    )
    return runs[0] if runs else None
