"""Helpers shared by the comparison, sweep, registry and server tests: seconds-long trainings on an explicit store.

Module-scoped fixtures cannot use ``monkeypatch``, so these pass the tracking URI as ``logger.tracking_uri``
instead of through ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _root_conftest():
    """``tests/conftest.py`` by path: ``import conftest`` gives whichever conftest pytest loaded last
    (``tests/kernels/conftest.py`` in a full run)."""
    spec = importlib.util.spec_from_file_location("_stlm_tests_root_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conftest = _root_conftest()
CONF_DIR, TINY_TRAFFIC = _conftest.CONF_DIR, _conftest.TINY_TRAFFIC

# The tiny data and trainer without the STLM sizes (model.d_model, ...), for sweeps over other models.
TINY_ANY_MODEL = [o for o in TINY_TRAFFIC if not o.startswith("model.")]


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def train_tiny(root: Path, uri: str, name: str, model: str, *overrides: str) -> dict:
    """One tiny training (``stlm.train.run``) of ``model`` into ``root/outputs/name``, logged to ``uri``."""
    from stlm.train import run

    tiny = TINY_TRAFFIC if model == "stlm" else TINY_ANY_MODEL
    cfg = compose("train", [*tiny, f"model={model}", f"paths.outputs_root={root / 'outputs'}",
                            f"paths.output_dir={root / 'outputs' / name}", f"logger.tracking_uri={uri}", *overrides])
    return run(cfg)


def compare_cfg(out: Path, uri: str, *overrides: str):
    """``conf/compare.yaml`` writing into ``out`` and reading ``uri``."""
    return compose("compare", [f"paths.output_dir={out}", f"tracking_uri={uri}", *overrides])


def multirun_train(argv: list[str], monkeypatch) -> None:
    """``python -m stlm.train -m ARGV`` in this process (Hydra's basic launcher runs the jobs one by one).

    The same task function as ``stlm.train.main``, decorated with the absolute config directory: Hydra resolves
    ``config_path="../conf"`` against the ``__main__`` file only when started with ``python -m``.
    """
    import hydra

    from stlm.train import run

    @hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
    def main(cfg) -> None:
        run(cfg)

    monkeypatch.setattr(sys, "argv", ["stlm.train", "-m", *argv])
    monkeypatch.delenv("STLM_SWEEP_ID", raising=False)
    main()


def train_compare_promote(root: Path, uri: str, name: str = "tiny_linear") -> dict:
    """The whole path on one tracking store: two seeds of a trained model registered as ``name``, a fitted
    baseline, a comparison that promotes the best trained run to ``@champion``, and the checkpoint read back
    through the registry. Returns what the callers assert on."""
    from stlm.compare import compare
    from stlm.tracking.registry import resolve_checkpoint_from_uri

    trained = [train_tiny(root, uri, f"linear{s}", "linear", f"seed={s}", f"register={name}", "~baselines")
               for s in (0, 1)]
    train_tiny(root, uri, "last_value", "last_value", f"register={name}", "~baselines")  # nothing to register
    result = compare(compare_cfg(root / "compare", uri, "tag=model:LinearForecaster", "promote=champion"))
    champion = resolve_checkpoint_from_uri(f"models:/{name}@champion", tracking_uri=uri, dst_dir=root / "download")
    return {"trained": trained, "compare": result, "champion": champion}
