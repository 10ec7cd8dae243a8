"""``python -m stlm.compare``: see :mod:`stlm.compare.job` and ``conf/compare.yaml``."""

import hydra
from omegaconf import DictConfig

from stlm.errors import reported_as_user_error
from stlm.compare.job import compare


@hydra.main(config_path="../../conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported_as_user_error():
        compare(cfg)


if __name__ == "__main__":
    main()
