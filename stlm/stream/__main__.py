"""``python -m stlm.stream checkpoint=PATH``: streaming forecasts from a trained model (see conf/stream.yaml).

``input=replay`` streams the training data set (or ``source.path=`` another file of the same layout), read by the
training run's datamodule exactly as the batch forecast job reads it, in time order and writes forecast chunks; ``input=stdin`` reads CSV lines ``timestamp,v1,...,vN`` (empty = missing) and
prints one JSON forecast per line. Both save the state every ``save_every`` steps and resume from it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from stlm.cli import run_hydra_job
from stlm.forecast.data import prepare_data
from stlm.forecast.restore import dataset_config
from stlm.stream.replay import replay, resolve_start
from stlm.stream.streamer import Streamer

log = logging.getLogger("stlm.stream")


def _streamer(cfg: DictConfig, state_path: Path) -> Streamer:
    streamer = Streamer.from_checkpoint(to_absolute_path(cfg.checkpoint))
    if state_path.exists():
        streamer.restore(state_path)
        log.info("state %s: resuming after %s (%d steps seen)", state_path, streamer.last_time, streamer.steps_seen)
    return streamer


def run_replay(cfg: DictConfig) -> int:
    output, state_path = Path(to_absolute_path(cfg.output)), Path(to_absolute_path(cfg.state))
    streamer = _streamer(cfg, state_path)
    overrides = {f"source.{k}": v for k, v in OmegaConf.to_container(cfg.source).items()}
    dataset_cfg = dataset_config(streamer.trained, overrides, output / "work")
    datamodule = prepare_data(streamer.trained, dataset_cfg).datamodule
    series = datamodule.series
    start = resolve_start(cfg.start, series, datamodule.periods)
    written = replay(streamer, series, start, cfg.steps, output, state_path, cfg.save_every, cfg.warmup, cfg.pace_s)
    print(f"{written} forecasts written to {output / 'forecasts'}; state {state_path} (last observation {streamer.last_time})")
    return written


def run_stdin(cfg: DictConfig) -> int:
    state_path = Path(to_absolute_path(cfg.state))
    streamer = _streamer(cfg, state_path)
    count = 0
    for line_number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        stamp, *cells = line.rstrip("\n").split(",")
        if len(cells) != streamer.spec.n_nodes * streamer.spec.n_channels:
            raise SystemExit(
                f"stdin line {line_number}: expected a timestamp and {streamer.spec.n_nodes * streamer.spec.n_channels} "
                f"values (sensors x channels, empty = missing), got {len(cells)}"
            )
        values = np.array([float(c) if c.strip() else np.nan for c in cells], dtype=np.float32)
        forecast = streamer.push(values.reshape(streamer.spec.n_nodes, streamer.spec.n_channels), stamp)
        record = {
            "issued_at": forecast.issued_at.isoformat(),
            "valid_times": [t.isoformat() for t in forecast.valid_times],
            "values": np.round(forecast.values, 4).tolist(),  # [H][N][C] (quantiles [H][N][C][Q], members [..][M])
        }
        if forecast.levels is not None:
            record["quantiles"] = forecast.levels.tolist()
        if forecast.members is not None:
            record["members"] = forecast.members
        print(json.dumps(record), flush=True)
        count += 1
        if count % cfg.save_every == 0:
            streamer.save(state_path)
    streamer.save(state_path)
    return count


def stream(cfg: DictConfig) -> int:
    """Run the input mode ``cfg.input`` (replay or stdin); returns the number of forecasts issued."""
    runs = {"replay": run_replay, "stdin": run_stdin}
    if cfg.input not in runs:
        raise ValueError(f"input={cfg.input!r}: choose replay or stdin")
    return runs[cfg.input](cfg)


if __name__ == "__main__":
    run_hydra_job("stream", stream)
