"""State files of a streaming forecaster: the recurrent state, the time of the last observation and the
fingerprint of the model that wrote it.

Written atomically (temporary file + ``os.replace``), read with ``torch.load(weights_only=True)`` (no code runs),
and refused when the fingerprint is not the loading model's: a state of another model would forecast garbage
without any error.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import torch

from stlm.io.atomic import atomic_write_bytes

FORMAT = 1


def save_state(path, fingerprint: str, state: dict[str, torch.Tensor], last_time: pd.Timestamp | None, steps_seen: int) -> Path:
    payload = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "state": {k: v.detach().cpu() for k, v in state.items()},
        "last_time_ns": None if last_time is None else int(last_time.value),
        "steps_seen": int(steps_seen),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_state(path, fingerprint: str, like: dict[str, torch.Tensor]):
    """(state, last_time, steps_seen) from ``path``; ``like`` is a fresh state of the loading model (shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stream state {path} does not exist; omit it to start a fresh stream")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"stream state {path} cannot be read ({type(err).__name__}); it is truncated or not a state file") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"stream state {path} is not a stlm stream state (format {FORMAT})")
    if payload["fingerprint"] != fingerprint:
        raise ValueError(
            f"stream state {path} was written by model {payload['fingerprint']}, not by this model ({fingerprint}); "
            "use the checkpoint that wrote it, or start a fresh stream"
        )
    state = payload["state"]
    if set(state) != set(like) or any(state[k].shape != like[k].shape for k in like):
        raise ValueError(f"stream state {path} does not have this model's state shapes")
    last = payload["last_time_ns"]
    return state, (None if last is None else pd.Timestamp(last)), payload["steps_seen"]
