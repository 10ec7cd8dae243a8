"""The whole path (train, compare, registry) against a real ``mlflow server`` started on 127.0.0.1 by the test.

The server gets a free port, a SQLite backend and an artifacts directory in a temporary folder, and serves the
artifacts itself (``mlflow-artifacts:/``), so clients upload and download checkpoints through HTTP only.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from test_registry import check_whole_path
from tiny_runs import train_compare_promote

STARTUP_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1:<free port>; yields its URI, stops it at the end of the module."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = open(root / "server.log", "w")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"mlflow server did not become healthy at {url} (exit code {proc.poll()}):\n"
                            f"{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_train_compare_and_registry_through_a_server(mlflow_server, tmp_path):
    url, server_root = mlflow_server
    out = train_compare_promote(tmp_path, url)
    check_whole_path(tmp_path, url, out)
    # The checkpoints went through the server into its artifacts directory, not into a local mlartifacts folder.
    assert list((server_root / "artifacts").rglob("best.ckpt"))
    assert not (tmp_path / "mlartifacts").exists()


def test_a_stopped_server_is_reported_with_the_fix(tmp_path):
    from stlm.tracking.store import ensure_store

    with pytest.raises(RuntimeError, match="is not reachable .* Start the server"):
        ensure_store(f"http://127.0.0.1:{_free_port()}")
