"""``python -m stlm.forecast``: see :mod:`stlm.forecast` and ``conf/forecast.yaml``."""

from stlm.cli import run_hydra_job
from stlm.forecast.job import run_forecast

if __name__ == "__main__":
    run_hydra_job("forecast", run_forecast)
