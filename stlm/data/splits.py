"""Chronological train/val/test splits in which no window crosses a boundary.

The series is cut in time into three contiguous periods (default 70/10/20 %). A sample (``window`` input steps
followed by ``horizon`` target steps) belongs to a split only if all its steps lie inside that split's period,
so no target of the validation or test period was ever seen as input or target in training.

With ``history_across_splits`` a validation or test sample's *inputs* may reach back into the earlier periods
(only its targets must lie inside its split). Nothing leaks: those inputs are observations that precede the
forecast time, as they would in deployment. This is what long windows need (a one-week window does not fit
inside a few days of validation), and it gives every window length the same set of target steps, so windows of
different lengths are scored on exactly the same targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ChronologicalSplit:
    """Fractions of the time axis for train, val and test (they must sum to 1)."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.test)
        if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6 or self.train == 0:
            raise ValueError(
                f"dataset.split: train/val/test fractions must be >= 0, train > 0, and sum to 1; got {fractions}"
            )

    def periods(self, n_steps: int) -> dict[str, tuple[int, int]]:
        """Half-open step ranges ``[start, end)`` of each split."""
        train_end = int(round(n_steps * self.train))
        val_end = int(round(n_steps * (self.train + self.val)))
        return {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, n_steps)}

    def sample_starts(
        self,
        n_steps: int,
        window: int,
        horizon: int,
        stride: int = 1,
        history_across_splits: bool = False,
        eval_stride: int = 1,
    ) -> dict[str, np.ndarray]:
        """First step of every sample of each split, ``[n_samples]`` int64 per split (every ``stride``-th in
        training, every ``eval_stride``-th in validation and test)."""
        span = window + horizon
        starts = {}
        for name, (a, b) in self.periods(n_steps).items():
            if history_across_splits and name != "train":
                a = max(a - window, 0)  # the first target may be the split's first step
            # A split with no room for one sample stays empty here; the datamodule decides if that is an error.
            starts[name] = np.arange(a, max(b - span + 1, a), stride if name == "train" else eval_stride, dtype=np.int64)
        return starts
