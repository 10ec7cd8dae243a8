"""``python -m stlm.forecast``: see :mod:`stlm.forecast` and ``conf/forecast.yaml``."""

import hydra
from omegaconf import DictConfig

from stlm.forecast.job import run_forecast
from stlm.errors import reported_as_user_error


@hydra.main(config_path="../../conf", config_name="forecast", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported_as_user_error():
        run_forecast(cfg)


if __name__ == "__main__":
    main()
