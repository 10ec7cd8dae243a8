"""Training: the job (``python -m stlm.train``, :mod:`stlm.train.job`), run records and resume (``runs``),
config checks (``config_check``) and the callbacks the job adds (``preemption``, ``rng_state``, ``throughput``).

``run``, ``build_engine`` and ``evaluate_baselines`` are imported from the job on first use, so importing a small
module of this package (``stlm.train.runs`` for a forecast job) does not import the whole training job.
"""

__all__ = ["build_engine", "evaluate_baselines", "run"]


def __getattr__(name: str):
    if name in __all__:
        from stlm.train import job

        return getattr(job, name)
    raise AttributeError(f"module 'stlm.train' has no attribute {name!r}")
