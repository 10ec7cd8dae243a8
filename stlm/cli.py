"""The one way ``python -m stlm.<job>`` starts: Hydra with ``conf/<name>.yaml``, user errors in one paragraph.

Every entry point (train, forecast, evaluate, stream, compare) is ``run_hydra_job("<config>", <job>)`` in its
``__main__``. The config directory is absolute (the repository's ``conf/``), so the task function may live here
rather than in each ``__main__`` module; each config names its Hydra job (``hydra.job.name``), which names the
job's log file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig

from stlm.errors import reported_as_user_error

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def run_hydra_job(config_name: str, job: Callable[[DictConfig], object]) -> None:
    """Parse the command line with Hydra (``conf/<config_name>.yaml`` plus overrides) and run ``job(cfg)``;
    user errors (:data:`stlm.errors.USER_ERRORS`) end as Hydra's compact one-paragraph error, exit status 1."""

    @hydra.main(config_path=CONFIG_DIR, config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig) -> None:
        with reported_as_user_error():
            job(cfg)

    main()
