"""``python -m stlm.evaluate``: see :mod:`stlm.evaluate` and ``conf/evaluate.yaml``."""

import hydra
from omegaconf import DictConfig

from stlm.errors import reported_as_user_error
from stlm.evaluate.job import run_evaluation


@hydra.main(config_path="../../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported_as_user_error():
        run_evaluation(cfg)


if __name__ == "__main__":
    main()
