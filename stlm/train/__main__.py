"""``python -m stlm.train``: see :mod:`stlm.train.job` and ``conf/train.yaml``."""

from stlm.cli import run_hydra_job
from stlm.train.job import run

if __name__ == "__main__":
    run_hydra_job("train", run)
