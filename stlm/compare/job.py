"""Compare training runs: ``python -m stlm.compare experiment=traffic [sweep=ID] [promote=champion]``.

Selects finished runs (one or several experiments, an MLflow filter string, a tag ``KEY:VALUE``, the runs of one
sweep), groups those that differ only by seed, and writes one table, best first by ``rank_by``: to the terminal,
``comparison.md`` and ``comparison.csv``, with PNG plots (metric by horizon, learning curves) beside them in
``paths.output_dir``. ``log_to_mlflow`` logs those files as a comparison run (tag ``stlm.kind=comparison``);
``promote=ALIAS`` points ``models:/NAME@ALIAS`` at the best run's registered checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stlm.compare.query import build_filter, select_runs
from stlm.compare.render import to_csv, to_markdown, to_text
from stlm.compare.table import Comparison, group_runs
from stlm.io.atomic import atomic_write_text
from stlm.tracking.store import ensure_experiment, resolve_tracking_uri

log = logging.getLogger("stlm.compare")
COMPARISON_EXPERIMENT = "comparisons"  # where a comparison spanning several experiments is logged


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise FileNotFoundError(f"tracking_uri={tracking_uri!r}: no MLflow store at that path; run stlm.compare where "
                                "stlm.train ran, or set tracking_uri / MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def write_outputs(client, comp: Comparison, cfg: DictConfig, out: Path) -> list[Path]:
    """The table as Markdown and CSV, and the plots, in ``out``; returns the files written."""
    from stlm.compare.plots import plot_horizons, plot_learning_curves

    metrics, horizons = list(cfg.metrics), (list(cfg.horizons) if cfg.horizons is not None else None)
    files = [atomic_write_text(out / "comparison.md", to_markdown(comp, metrics, horizons)),
             atomic_write_text(out / "comparison.csv", to_csv(comp))]
    if cfg.plots:
        files += [plot_horizons(comp, m, out / f"horizon_{m}.png") for m in metrics]
        files.append(plot_learning_curves(client, comp, list(cfg.learning_curves), out / "learning_curves.png"))
    return [f for f in files if f is not None]


def log_comparison(client, tracking_uri: str, comp: Comparison, frame, query: str, files: list[Path]) -> str:
    """A comparison run holding the files, in the runs' experiment (or ``comparisons`` when they span several)."""
    experiments = sorted(set(frame["experiment_id"]))
    exp_id = experiments[0] if len(experiments) == 1 else ensure_experiment(tracking_uri, COMPARISON_EXPERIMENT)
    run = client.create_run(exp_id, run_name="comparison", tags={
        "stlm.kind": "comparison", "stlm.compare.filter": query, "stlm.compare.n_runs": str(len(frame)),
        "stlm.compare.best_run": str(comp.rows.iloc[0]["best_run_id"]), "stlm.compare.rank_by": comp.rank_by,
    })
    for f in files:
        client.log_artifact(run.info.run_id, str(f), artifact_path="comparison")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def compare(cfg: DictConfig) -> dict[str, Any]:
    """Run the comparison described by ``cfg`` (``conf/compare.yaml``); returns the table, files and run ids."""
    uri = resolve_tracking_uri(cfg.tracking_uri)
    client = _client(uri)
    frame = select_runs(client, cfg.experiment, cfg.filter, cfg.tag, cfg.sweep)
    comp = group_runs(frame, rank_by=cfg.rank_by)
    out = Path(cfg.paths.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    text = to_text(comp, list(cfg.metrics), list(cfg.horizons) if cfg.horizons is not None else None)
    print(f"\n{len(frame)} runs, {len(comp.rows)} configurations (test split, original units; best first by {cfg.rank_by}):\n{text}\n")
    files = write_outputs(client, comp, cfg, out)
    atomic_write_text(out / "compare_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    result: dict[str, Any] = {"comparison": comp, "frame": frame, "files": files, "output_dir": out, "tracking_uri": uri}
    print(f"written to    : {out} ({', '.join(f.name for f in files)})")
    if cfg.log_to_mlflow:
        query = build_filter(cfg.filter, cfg.tag, cfg.sweep)
        result["comparison_run_id"] = log_comparison(client, uri, comp, frame, query, files)
        print(f"MLflow run    : {result['comparison_run_id']} (tag stlm.kind=comparison, {uri})")
    if cfg.promote:
        from stlm.tracking.registry import promote_run

        best = comp.rows.iloc[0]
        version = promote_run(str(best["best_run_id"]), str(cfg.promote), cfg.register, client=client,
                              label=f"{best['label']}, {cfg.rank_by} {best[f'{cfg.rank_by} mean']:.3f}")
        result["promoted"] = version
        print(f"promoted      : models:/{version.name}@{cfg.promote} -> version {version.version} "
              f"({best['label']}, run {best['best_run_id']})")
    return result
