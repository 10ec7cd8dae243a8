"""MLflow unreachable: the run fails before any data is read, within seconds, with the store and the fix named.

The choice (stlm/tracking/store.py): training never starts without its tracking store, so no result exists only in a
log file; ``logger=none`` trains without tracking. The unit check of a refused server is
tests/test_mlflow_server.py::test_a_stopped_server_is_reported_with_the_fix.
"""

from __future__ import annotations

import socket
import time

import pytest

from reliability_helpers import tiny
from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.train import run
from tiny_runs import compose

FAST_S = 30  # MLflow's own clients retry for minutes (a refused server) or ~100 s (a SQLite file it cannot open)


def _no_data_may_be_read(self):
    raise AssertionError("the data was read before the tracking store was checked")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unwritable_sqlite(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the store's directory should be")  # refused even to root, unlike chmod
    return f"sqlite:///{blocker / 'mlflow.db'}"


@pytest.mark.parametrize("store, expected", [
    (lambda tmp: f"http://127.0.0.1:{_free_port()}", r"is not reachable .*Start the server.*logger=none"),
    (_unwritable_sqlite, r"cannot be opened .*writable directory.*logger=none"),
    (lambda tmp: f"file://{tmp / 'mlruns'}", r"filesystem tracking backend.*logger=none"),
], ids=["server_down", "sqlite_unwritable", "file_store"])
def test_unreachable_store_fails_fast_before_any_compute(tmp_path, monkeypatch, store, expected):
    uri = store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(SpatioTemporalDataModule, "prepare_data", _no_data_may_be_read)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=expected) as info:
        run(compose("train", tiny(tmp_path)))
    assert time.monotonic() - started < FAST_S
    assert uri in str(info.value)
    assert not (tmp_path / "outputs").exists()  # no run directory, nothing trained


def test_logger_none_trains_without_a_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    result = run(compose("train", tiny(tmp_path, "run", "logger=none")))
    assert result["run_id"] is None and result["best_checkpoint"]
