"""A streaming forecaster: one observation in, one forecast of the next ``horizon`` steps out, for any model.

Two ways to carry the history, chosen by what the model offers:

* **recurrent** (a model with ``step``, :meth:`STLMForecaster.step`): the model's state carries the whole
  history, so each step costs the same however long the stream has run;
* **window** (every other model, e.g. the grid model): the state is the last ``window`` observations; each step
  forecasts from them exactly as the batch forecast job does from the same window, so a streamed forecast
  equals the batch job's for the same init time.

Either state is saved to a file and a restarted process resumes from it without replaying history.

    streamer = Streamer.from_checkpoint("outputs/.../best.ckpt")
    forecast = streamer.push(values, timestamp)     values [N, C] or [N] in original units, NaN = missing
    forecast.values                                 [H, N, C] original units, at forecast.valid_times
                                                    ([H, N, C, Q] for a quantile model, at forecast.levels)
    streamer.save("state.pt"); streamer = Streamer.from_checkpoint(ckpt, state="state.pt")

Timestamps must advance by the data's interval. A gap of a few steps is filled with all-missing observations
(the model sees the sensors as missing, exactly as in training); a timestamp that repeats or goes back is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stlm.engines.checkpoints import TrainedModel, load_trained_model
from stlm.data.calendar import calendar_index, steps_per_day
from stlm.stream.state_file import load_state, save_state

MAX_GAP_STEPS = 288  # a longer gap is refused: the state would be mostly forgotten, start a fresh stream


@dataclass
class Forecast:
    issued_at: pd.Timestamp  # the time of the last observation
    valid_times: pd.DatetimeIndex  # [H]
    values: np.ndarray  # [H, N, C] original units; [H, N, C, Q] for a quantile model
    levels: np.ndarray | None = None  # [Q] the quantile levels of the last axis (None: point forecasts)
    members: int | None = None  # M, for an ensemble model: values [H, N, C, M] (equally likely members)


class Streamer:
    def __init__(self, trained: TrainedModel):
        self.trained = trained
        self.model, self.spec, self.scaler = trained.model.eval(), trained.spec, trained.scaler
        self.interval = pd.Timedelta(minutes=self.spec.interval_minutes)
        # The calendar's slots as the datamodule counts them (stlm.data.datamodule), whatever the model embeds.
        self.n_slots = steps_per_day(self.interval)
        self.recurrent = hasattr(self.model, "step")
        levels = getattr(self.model, "quantile_levels", None)
        self.levels = None if levels is None else np.round(levels.numpy().astype(np.float64), 6)
        self.members = getattr(self.model, "ensemble_members", None)  # MC dropout: windowed, as it has no step
        if self.recurrent:
            self.state = self.model.init_state(batch=1)
        else:  # the last `window` observations in original units, NaN = missing (oldest first)
            self.state = {"window": torch.full((self.spec.window, self.spec.n_nodes, self.spec.n_channels), float("nan"))}
        self.last_time: pd.Timestamp | None = None
        self.steps_seen = 0

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, state: str | Path | None = None) -> "Streamer":
        streamer = cls(load_trained_model(checkpoint))
        if state is not None:
            streamer.restore(state)
        return streamer

    # ----- stepping ---------------------------------------------------------------------------------------------

    def push(self, values: np.ndarray, timestamp) -> Forecast:
        """Take the observation at ``timestamp`` (NaN = missing) and forecast the next ``horizon`` steps."""
        timestamp = pd.Timestamp(timestamp)
        values = self._check_values(values, timestamp)
        if self.last_time is not None:
            steps = (timestamp - self.last_time) / self.interval
            if steps <= 0 or steps != int(steps):
                raise ValueError(
                    f"Streamer.push: timestamp {timestamp} does not follow the last observation {self.last_time} by a "
                    f"whole number of {self.interval} steps (repeated, out of order or off the grid)"
                )
            if steps > MAX_GAP_STEPS:
                raise ValueError(
                    f"Streamer.push: {timestamp} comes {int(steps)} steps after {self.last_time}; gaps longer than "
                    f"{MAX_GAP_STEPS} steps are refused (start a fresh stream without state)"
                )
            missing, last = np.full_like(values, np.nan), self.last_time
            for k in range(1, int(steps)):
                self._step(missing, last + k * self.interval)
        return self._step(values, timestamp)

    def _step(self, values: np.ndarray, timestamp: pd.Timestamp) -> Forecast:
        valid = pd.date_range(timestamp + self.interval, periods=self.spec.horizon, freq=self.interval)
        y_time = torch.from_numpy(calendar_index(valid, self.n_slots))[None]  # [1, H, K]
        with torch.no_grad():
            if self.recurrent:
                scaled = torch.from_numpy(self.scaler.transform(values))[None]  # [1, N, C]; NaN stays NaN = missing
                x_time = torch.from_numpy(calendar_index(pd.DatetimeIndex([timestamp]), self.n_slots))  # [1, K]
                forecast, self.state = self.model.step(scaled, x_time, self.state, y_time=y_time)
            else:
                forecast = self._window_forecast(values, timestamp, y_time)
            out = self.scaler.inverse_transform(forecast)[0].numpy()
        self.last_time, self.steps_seen = timestamp, self.steps_seen + 1
        return Forecast(issued_at=timestamp, valid_times=valid, values=out, levels=self.levels, members=self.members)

    def _window_forecast(self, values: np.ndarray, timestamp: pd.Timestamp, y_time: torch.Tensor) -> torch.Tensor:
        """Shift the observation into the window and forecast from the window, as a batch of one sample
        (:class:`stlm.data.windowing.WindowDataset` builds the same batch for the same window)."""
        window = torch.cat([self.state["window"][1:], torch.from_numpy(values)[None]])
        self.state = {"window": window}
        raw = window.numpy()
        observed = np.isfinite(raw)
        scaled = np.where(observed, self.scaler.transform(np.where(observed, raw, np.float32(0.0))), np.float32(0.0))
        times = pd.date_range(end=timestamp, periods=self.spec.window, freq=self.interval)
        batch = {
            "x": torch.from_numpy(scaled.astype(np.float32))[None],
            "x_mask": torch.from_numpy(observed.astype(np.float32))[None],
            "x_time": torch.from_numpy(calendar_index(times, self.n_slots))[None],
            "y_time": y_time,
        }
        return self.model(batch)

    def _check_values(self, values, timestamp) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32)
        N, C = self.spec.n_nodes, self.spec.n_channels
        if values.shape == (N,) and C == 1:
            values = values[:, None]
        if values.shape != (N, C):
            raise ValueError(f"Streamer.push at {timestamp}: values must be [N={N}, C={C}] (NaN = missing), got {values.shape}")
        return np.where(np.isfinite(values), values, np.nan).astype(np.float32)

    # ----- state files ------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the state atomically (a crash mid-write keeps the previous file)."""
        return save_state(path, self.trained.fingerprint, self.state, self.last_time, self.steps_seen)

    def restore(self, path: str | Path) -> None:
        """Continue from a state written by :meth:`save` of the same model (checked by fingerprint)."""
        self.state, self.last_time, self.steps_seen = load_state(path, self.trained.fingerprint, self.state)
