"""Training: the job (``python -m stlm.train``, :mod:`stlm.train.job`), run records and resume (``runs``),
config checks (``config_check``) and the callbacks the job adds (``preemption``, ``rng_state``, ``throughput``)."""

from stlm.train.job import build_engine, evaluate_baselines, run

__all__ = ["build_engine", "evaluate_baselines", "run"]
