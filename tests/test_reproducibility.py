"""Same seed, same CPU: identical test metrics; the run records what reproducing it needs (versions, git sha)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tiny_runs import train_tiny


def test_same_seed_twice_gives_identical_test_metrics_and_another_seed_does_not(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = train_tiny(tmp_path, uri, "a", "stlm", "seed=3", "~baselines")
    second = train_tiny(tmp_path, uri, "b", "stlm", "seed=3", "~baselines")
    other = train_tiny(tmp_path, uri, "c", "stlm", "seed=4", "~baselines")
    assert first["run_id"] != second["run_id"]
    assert first["test"] == second["test"]  # exactly, every metric at every horizon
    assert other["test"]["mae_avg"] != first["test"]["mae_avg"]  # the seed does reach the training

    tags = MlflowClient(uri).get_run(first["run_id"]).data.tags
    for key in ("git_sha", "torch", "lightning", "mlflow", "numpy", "python", "torch_threads", "seed", "config_hash"):
        assert tags.get(key), key
    assert tags["deterministic_algorithms"] in ("True", "False")  # recorded either way (trainer.deterministic)
