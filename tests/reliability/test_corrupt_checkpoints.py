"""A truncated, empty or malicious checkpoint at resume: the previous valid checkpoint with a warning, or a clear
error naming the file and the fix; never a silent fresh start, and never code from the file executed."""

from __future__ import annotations

import builtins
import logging
import pickle
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from reliability_helpers import tiny
from stlm.engines.checkpoints import CheckpointError
from stlm.train.runs import RunRecord
from stlm.train import run
from tiny_runs import compose


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def trained(tmp_path, tracking_uri):
    """A finished two-epoch run (best.ckpt and last.ckpt) and its overrides."""
    overrides = tiny(tmp_path, "run", "trainer.max_epochs=2")
    result = run(compose("train", overrides))
    return overrides, result, tmp_path / "outputs" / "run" / "checkpoints"


def test_truncated_last_falls_back_to_best_with_a_warning(trained, tracking_uri, caplog):
    overrides, first, checkpoints = trained
    _truncate(checkpoints / "last.ckpt")
    caplog.set_level(logging.INFO, logger="pytorch_lightning")
    with pytest.warns(UserWarning, match=r"last\.ckpt cannot be read .*resuming from .*best\.ckpt instead"):
        resumed = run(compose("train", [*overrides, "ckpt_path=last"]))
    assert f"Restored all states from the checkpoint at {checkpoints / 'best.ckpt'}" in caplog.text  # not fresh
    assert resumed["run_id"] == first["run_id"]  # the same run continued
    assert MlflowClient(first["tracking_uri"]).get_run(first["run_id"]).info.status == "FINISHED"
    assert RunRecord.load(Path(first["run_dir"]) / "run.json").status == "finished"


def test_truncated_last_without_a_valid_best_is_refused_with_the_fix(trained, tracking_uri):
    overrides, first, checkpoints = trained
    _truncate(checkpoints / "last.ckpt")
    (checkpoints / "best.ckpt").write_bytes(b"")
    before = (checkpoints / "last.ckpt").read_bytes()
    with pytest.raises(CheckpointError) as info:
        run(compose("train", [*overrides, "ckpt_path=last"]))
    message = str(info.value)
    assert str(checkpoints / "last.ckpt") in message and "no readable best.ckpt" in message
    assert "run without ckpt_path to start a new run" in message and "nothing was trained" in message
    assert (checkpoints / "last.ckpt").read_bytes() == before  # nothing overwritten
    client = MlflowClient(first["tracking_uri"])
    assert len(client.search_runs([client.get_run(first["run_id"]).info.experiment_id])) == 1  # no fresh run


def test_an_explicit_empty_checkpoint_file_is_refused(tmp_path, tracking_uri):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{empty}.*cannot be read as a checkpoint.*Pass a best.ckpt or last.ckpt"):
        run(compose("train", tiny(tmp_path, "run", f"ckpt_path={empty}")))
    assert not (tmp_path / "outputs" / "run").exists()  # refused before anything was written


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: creating the marker file proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.mark.parametrize("fmt", ["torch_zip", "torch_legacy", "raw_pickle"])
def test_a_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path, tracking_uri, fmt):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    payload = {"state_dict": {}, "epoch": 0, "global_step": 0, "evil": _Payload(marker)}
    if fmt == "raw_pickle":
        evil.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, evil, _use_new_zipfile_serialization=fmt == "torch_zip")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=rf"{evil}.*cannot be read.*nothing from the file was executed"):
        run(compose("train", tiny(tmp_path, "run", f"ckpt_path={evil}")))
    assert not marker.exists()
