"""Configuration errors: ``python -m stlm.train`` prints a message naming the key (Hydra's own, or
stlm.train.config_check's in the same compact form), exits non-zero, and shows no traceback from inside the model."""

from __future__ import annotations

import subprocess

import pytest
from omegaconf import OmegaConf

from reliability_helpers import env, train_cmd
from stlm.train.config_check import ConfigError, check_config
from tiny_runs import CONF_DIR, TINY_TRAFFIC, compose


def _train_fails(tmp_path, *overrides: str) -> str:
    proc = subprocess.run(train_cmd(*overrides, f"paths.outputs_root={tmp_path / 'outputs'}", "logger=none"),
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    written = {p.name for p in (tmp_path / "outputs").rglob("*") if p.is_file()}
    assert not written & {"run.json", "last.ckpt", "best.ckpt"}  # refused before anything ran (Hydra's .hydra/ only)
    return proc.stderr


def test_wrong_types_unknown_argument_and_missing_value_are_named_together(tmp_path):
    err = _train_fails(tmp_path, "model.d_model=abc", "+model.d_modle=3", "trainer.max_epochs=two", "dataset=csv")
    assert "Invalid configuration:" in err
    assert "model.d_model='abc'" in err and "expects int" in err
    assert "model.d_modle" in err and "has no argument 'd_modle'" in err
    assert "trainer.max_epochs='two'" in err
    assert "dataset.path: a required value is missing" in err and "add dataset.path=" in err


def test_unknown_key_gets_hydras_message(tmp_path):
    err = _train_fails(tmp_path, "model.d_modle=3")
    assert "Could not override 'model.d_modle'" in err and "Key 'd_modle' is not in struct" in err


@pytest.mark.parametrize("override, message", [
    ("model.d_model=abc", r"model\.d_model='abc': .*STLMForecaster \(argument 'd_model'\) expects int.*e\.g\. model\.d_model=32"),
    ("dataset.window=abc", r"dataset\.window='abc': .*expects int.*e\.g\. dataset\.window=12"),  # set through ${dataset.window}
    ("engine.optimizer.lr=fast", r"engine\.optimizer\.lr='fast': torch\.optim\.AdamW .*expects float"),
    ("+model.d_modle=3", r"model\.d_modle: .* has no argument 'd_modle' \(valid: .*d_model.*\)"),
    ("dataset=metr_la", r"dataset\.path: a required value is missing"),
    ("model.quantiles=[0.1,0.9]", r"model\.quantiles=\[0\.1, 0\.9\]: include the median 0\.5"),
    ("model.quantiles=all", r"model\.quantiles='all': give null .*default"),
    ("model.ensemble=1", r"model\.ensemble=1: give the number of ensemble members, an integer >= 2"),
    ("model.ensemble=many", r"model\.ensemble='many': give the number of ensemble members"),
    ("model.ensemble=8 model.quantiles=default", r"model\.ensemble=8 with model\.quantiles=default: .*set one of them to null"),
])
def test_each_kind_of_error_names_the_key_to_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose("train", [*override.split(), "paths.output_dir=/unused"]))


def _every_option() -> list[list[str]]:
    options = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for yaml in sorted(group.rglob("*.yaml")):
            name = yaml.relative_to(CONF_DIR).with_suffix("").as_posix()
            group_name, _, option = name.rpartition("/")
            options.append([f"{group_name}={option}"])
    return options


@pytest.mark.parametrize("overrides", _every_option(), ids=lambda o: o[0])
def test_every_shipped_option_passes_the_check(overrides):
    """No false alarms: each config option as shipped (required paths given) is accepted."""
    cfg = compose("train", [*overrides, "paths.output_dir=/unused"])
    if "path" in cfg.dataset.keys() and OmegaConf.is_missing(cfg.dataset, "path"):
        cfg.dataset.path = "data.file"
    check_config(cfg)


def _user_error(tmp_path, *overrides: str, **more_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*overrides, f"paths.outputs_root={tmp_path / 'outputs'}", "logger=none"),
                          cwd=tmp_path, env={**env(), **more_env}, capture_output=True, text=True, timeout=180)


def test_corrupt_checkpoint_is_one_paragraph_without_a_traceback(tmp_path):
    """The issue's case: ``ckpt_path=corrupt.ckpt`` was refused with a good message after a Python traceback."""
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    proc = _user_error(tmp_path, *TINY_TRAFFIC, f"ckpt_path={corrupt}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "File \"" not in proc.stderr, proc.stderr[-3000:]
    assert "CheckpointError" in proc.stderr and str(corrupt) in proc.stderr
    assert "HYDRA_FULL_ERROR=1 for a complete stack trace" in proc.stderr
    # For debugging the traceback is one switch away.
    debug = _user_error(tmp_path, *TINY_TRAFFIC, f"ckpt_path={corrupt}", HYDRA_FULL_ERROR="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_missing_data_file_is_one_paragraph_without_a_traceback(tmp_path):
    proc = _user_error(tmp_path, "dataset=csv", f"dataset.path={tmp_path / 'nowhere.csv'}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "nowhere.csv" in proc.stderr and "Fix dataset.path" in proc.stderr
