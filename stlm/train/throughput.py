"""Training time and throughput of a run, measured by a Lightning callback and logged as ``perf/*`` metrics."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class Throughput(pl.Callback):
    """Counts samples and wall seconds spent in training and test batches (this rank only).

    ``metrics()`` gives ``perf/fit_s`` (wall time of ``trainer.fit``, validation included),
    ``perf/train_samples_per_s`` and ``perf/test_samples_per_s`` (batches only, data loading excluded).
    """

    def __init__(self) -> None:
        self.fit_s = 0.0
        self.samples = {"train": 0, "test": 0}
        self.seconds = {"train": 0.0, "test": 0.0}
        self._fit_start: float | None = None
        self._batch_start: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._fit_start is not None:
            self.fit_s += time.perf_counter() - self._fit_start

    def _start(self, *args) -> None:
        self._batch_start = time.perf_counter()

    def _end(self, stage: str, batch) -> None:
        if self._batch_start is not None:
            self.seconds[stage] += time.perf_counter() - self._batch_start
            self.samples[stage] += int(batch["y"].shape[0])

    on_train_batch_start = on_test_batch_start = _start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._end("train", batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._end("test", batch)

    def metrics(self) -> dict[str, float]:
        out = {"perf/fit_s": self.fit_s}
        for stage in ("train", "test"):
            if self.samples[stage] and self.seconds[stage] > 0:
                out[f"perf/{stage}_samples_per_s"] = self.samples[stage] / self.seconds[stage]
        return out
