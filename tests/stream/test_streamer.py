"""Streaming forecasts end to end: a tiny trained checkpoint, the Streamer, its state files and the CLI.

The model-level step-vs-window equivalence is in tests/nn/test_recurrent.py; here the whole path (scaling,
calendar, node alignment, units) is checked against the engine's windowed predictions, and a streaming process
killed with SIGKILL resumes from its state file to the same forecasts as an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tiny_runs import CONF_DIR, TINY_TRAFFIC
from stlm.engines.checkpoints import CheckpointError, load_trained_model
from stlm.stream import Streamer
from stlm.stream.replay import read_forecasts

REPO_ROOT = CONF_DIR.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """best.ckpt of a seconds-long STLM training on the tiny embedded default (no tracking)."""
    from hydra import compose, initialize_config_dir

    from stlm.train import run

    root = tmp_path_factory.mktemp("stream_train")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [*TINY_TRAFFIC, "logger=none", f"paths.outputs_root={root}", f"paths.output_dir={root / 'run'}"])
    return Path(run(cfg)["best_checkpoint"])


@pytest.fixture(scope="module")
def trained(checkpoint):
    return load_trained_model(checkpoint)


@pytest.fixture(scope="module")
def datamodule(trained):
    dm = instantiate(OmegaConf.create(trained.config["dataset"]["datamodule"]))
    dm.setup("fit")
    return dm


def observations(dm) -> np.ndarray:
    series = dm.series
    return np.where(series.mask, series.values, np.nan)  # [T, N, C] original units, NaN = missing


def test_stream_equals_the_engines_windowed_forecast(trained, datamodule):
    """Fed exactly one window, the streamer's forecast (original units) is the windowed model's prediction."""
    test_set = datamodule.datasets["test"]
    sample = test_set.__getitems__([5])
    first_input = int(test_set.starts[5])
    values, times = observations(datamodule), datamodule.series.timestamps
    streamer = Streamer(trained)
    for t in range(first_input, first_input + datamodule.window):
        forecast = streamer.push(values[t], times[t])
    with torch.no_grad():
        expected = trained.scaler.inverse_transform(trained.model(sample))[0].numpy()
    np.testing.assert_allclose(forecast.values, expected, rtol=1e-4, atol=1e-3)
    assert forecast.valid_times[0] == times[first_input + datamodule.window]


def test_saved_state_resumes_exactly(trained, datamodule, tmp_path):
    values, times = observations(datamodule), datamodule.series.timestamps
    straight = Streamer(trained)
    for t in range(40):
        last_straight = straight.push(values[t], times[t])
    first = Streamer(trained)
    for t in range(25):
        first.push(values[t], times[t])
    first.save(tmp_path / "state.pt")
    resumed = Streamer(trained)
    resumed.restore(tmp_path / "state.pt")
    assert resumed.last_time == times[24] and resumed.steps_seen == 25
    for t in range(25, 40):
        last_resumed = resumed.push(values[t], times[t])
    np.testing.assert_array_equal(last_resumed.values, last_straight.values)


def test_state_of_another_model_is_refused(trained, tmp_path):
    streamer = Streamer(trained)
    streamer.save(tmp_path / "state.pt")
    other = load_trained_model(trained.path)
    with torch.no_grad():
        other.model.embed.node.add_(0.01)
    from stlm.engines.checkpoints import model_fingerprint

    other.fingerprint = model_fingerprint(other.model, other.spec)
    with pytest.raises(ValueError, match="was written by model .* not by this model"):
        Streamer(other).restore(tmp_path / "state.pt")


def test_truncated_state_file_is_refused(trained, tmp_path):
    path = Streamer(trained).save(tmp_path / "state.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read"):
        Streamer(trained).restore(path)


def test_gaps_are_filled_as_missing_and_time_must_advance(trained, datamodule):
    values, times = observations(datamodule), datamodule.series.timestamps
    gapped, filled = Streamer(trained), Streamer(trained)
    for t in range(10):
        gapped.push(values[t], times[t])
        filled.push(values[t], times[t])
    for t in (10, 11):
        filled.push(np.full_like(values[t], np.nan), times[t])
    np.testing.assert_array_equal(gapped.push(values[12], times[12]).values, filled.push(values[12], times[12]).values)
    assert gapped.steps_seen == filled.steps_seen == 13
    with pytest.raises(ValueError, match="does not follow the last observation"):
        gapped.push(values[12], times[12])
    with pytest.raises(ValueError, match=r"values must be \[N=12, C=1\]"):
        gapped.push(values[13][:5], times[13])


def test_a_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "best.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="best.ckpt cannot be read"):
        load_trained_model(bad)


def _stream_cmd(checkpoint, output, steps=240):
    return [sys.executable, "-m", "stlm.stream", f"checkpoint={checkpoint}", f"output={output}", "start=test",
            f"steps={steps}", "warmup=24", "save_every=10", "pace_s=0.01"]


def test_killed_stream_resumes_from_its_state_to_the_same_forecasts(checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    uninterrupted = tmp_path / "straight"
    subprocess.run(_stream_cmd(checkpoint, uninterrupted), check=True, env=env, cwd=tmp_path, capture_output=True, timeout=240)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_stream_cmd(checkpoint, killed), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "forecasts").glob("chunk_*.npz"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    n_before = len(list((killed / "forecasts").glob("chunk_*.npz")))
    assert 5 <= n_before < 24, "the process must be killed mid-stream for this test to mean anything"
    done = subprocess.run(_stream_cmd(checkpoint, killed), check=True, env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert "resuming" in done.stderr + done.stdout or int(done.stdout.split()[0]) < 240

    t1, v1 = read_forecasts(uninterrupted)
    t2, v2 = read_forecasts(killed)
    assert len(t1) == 240
    assert t1.equals(t2)
    np.testing.assert_array_equal(v1, v2)


def test_stdin_mode_prints_one_forecast_per_line(checkpoint, datamodule, tmp_path):
    values, times = observations(datamodule), datamodule.series.timestamps
    lines = []
    for t in range(6):
        cells = ["" if np.isnan(v) else f"{v:.3f}" for v in values[t, :, 0]]
        lines.append(",".join([times[t].isoformat(), *cells]))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "stlm.stream", f"checkpoint={checkpoint}", "input=stdin",
                           f"output={tmp_path / 'stdin'}"], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, env=env, cwd=tmp_path, check=True, timeout=120)
    import json

    forecasts = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(forecasts) == 6
    assert pd.Timestamp(forecasts[-1]["valid_times"][0]) == times[6]
    assert np.isfinite(np.array(forecasts[-1]["values"])).all()
    assert (tmp_path / "stdin" / "state.pt").is_file()
