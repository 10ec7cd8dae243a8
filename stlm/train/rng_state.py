"""Random number generator states in checkpoints, so a resumed run continues the same random sequence.

Lightning 2.6 restores weights, optimizer, schedulers and loop counters from a checkpoint, but not the global
RNGs. The training loader draws its shuffle order from torch's global generator at the start of every epoch, so
a run resumed after epoch 1 would shuffle epoch 2 like epoch 1 of the original (the generator restarts from
the seed) and end with different metrics. :class:`RngStateCheckpoint` saves the python, numpy and torch (CPU
and CUDA) states with every checkpoint and puts them back when training resumes: a run killed and resumed
reaches the same final metrics as one that was never interrupted (``tests/reliability/test_kill_resume.py``).

States are stored as tensors, ints and lists, so checkpoints still load with ``torch.load(weights_only=True)``.
Under DDP every rank restores rank 0's state (the distributed sampler shuffles from ``seed + epoch`` anyway).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def capture() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngStateCheckpoint(pl.Callback):
    """Saves the global RNG states with each checkpoint; restores them when ``fit`` resumes from one."""

    def state_dict(self) -> dict[str, Any]:
        return capture()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            restore(state_dict)
