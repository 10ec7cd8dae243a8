"""``python -m stlm.compare``: see :mod:`stlm.compare.job` and ``conf/compare.yaml``."""

from stlm.cli import run_hydra_job
from stlm.compare.job import compare

if __name__ == "__main__":
    run_hydra_job("compare", compare)
