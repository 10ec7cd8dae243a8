"""``python -m stlm.evaluate``: see :mod:`stlm.evaluate` and ``conf/evaluate.yaml``."""

from stlm.cli import run_hydra_job
from stlm.evaluate.job import run_evaluation

if __name__ == "__main__":
    run_hydra_job("evaluate", run_evaluation)
