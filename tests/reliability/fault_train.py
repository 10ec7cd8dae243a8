"""``python fault_train.py STEP MARKER [overrides...]``: ``python -m stlm.train`` that holds still at a step.

The same Hydra task as ``stlm.train.main`` (same configuration, same ``run``), plus one callback: when the
global step reaches STEP it writes MARKER and waits (up to a minute) until a SIGTERM arrives or the process is
killed. A test waits for MARKER, then sends the signal, so the fault lands at a known step however fast or
slow the shared CPU is. The callback is an ``extra_callbacks`` entry: not part of the configuration, so the
configuration hash, and with it ``ckpt_path=last``, is that of the plain command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
WAIT_S = 60.0


def main() -> None:
    import pytorch_lightning as pl

    from stlm.train import run

    step, marker = int(sys.argv[1]), Path(sys.argv[2])
    del sys.argv[1:3]

    class HoldAtStep(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step != step or marker.exists():
                return
            marker.write_text(f"{trainer.current_epoch} {trainer.global_step}")
            deadline = time.monotonic() + WAIT_S
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)

    @hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
    def task(cfg) -> None:
        run(cfg, extra_callbacks=[HoldAtStep()])

    task()


if __name__ == "__main__":
    main()
