"""``python -m stlm.train``: see :mod:`stlm.train.job` and ``conf/train.yaml``."""

import hydra
from omegaconf import DictConfig

from stlm.errors import reported_as_user_error
from stlm.train.job import run


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported_as_user_error():
        run(cfg)


if __name__ == "__main__":
    main()
