"""Helpers of the forecast tests: a tiny trained traffic model (registered) and forecast/evaluate configs."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from tiny_runs import TINY_TRAFFIC, compose, train_tiny  # noqa: E402

MODEL_NAME = "tiny_traffic"


def train_registered(root: Path) -> dict:
    """A seconds-long training of the embedded default, registered as ``models:/tiny_traffic@champion``."""
    from stlm.tracking.registry import set_alias

    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = train_tiny(root, uri, "run", "stlm", f"register={MODEL_NAME}")
    set_alias(MODEL_NAME, "champion", 1, tracking_uri=uri)
    return result


def forecast_cfg(output: Path, *overrides: str):
    return compose("forecast", [f"output={output}", "progress=false", *overrides])


def evaluate_cfg(forecasts: Path, uri: str, *overrides: str):
    return compose("evaluate", [f"forecasts={forecasts}", f"mlflow.tracking_uri={uri}", *overrides])


def train_probabilistic(root: Path, *overrides: str) -> dict:
    """A tiny traffic run with ``overrides`` (``model.quantiles=default``, ``model.ensemble=8``, ...): its best
    checkpoint, test and baseline metrics, and ``root``."""
    import json

    from stlm.train import run

    cfg = compose("train", [*TINY_TRAFFIC, *overrides, "logger=none", f"paths.outputs_root={root}",
                            f"paths.output_dir={root / 'run'}"])
    result = run(cfg)
    record = json.loads((root / "run" / "run.json").read_text())
    return {"checkpoint": Path(result["best_checkpoint"]), "test": record["test_metrics"],
            "baselines": record["baseline_metrics"], "root": root}


def forecast_test_split(trained: dict, filename: str) -> Path:
    """The batch forecast file of ``trained`` (a :func:`train_probabilistic` result) over its test split."""
    from stlm.forecast import run_forecast

    out = trained["root"] / filename
    run_forecast(forecast_cfg(out, f"checkpoint={trained['checkpoint']}", "init_times.split=test"))
    return out
