"""The MLflow model registry for stlm checkpoints.

A registered version points at a training run's checkpoint artifact (``checkpoints/best.ckpt``, logged by
``stlm.train``): its source is ``runs:/<run id>/checkpoints`` and its tag ``checkpoint_artifact`` names the file.
The checkpoint itself carries the resolved config, data spec and scaler, so a forecast job needs nothing else:

    path = resolve_checkpoint_from_uri("models:/traffic_stlm@champion")    # or models:/NAME/3, runs:/ID/..., a run id

``stlm.train register=NAME`` registers a run's best checkpoint; ``stlm.compare promote=champion`` points an alias
at the best run of a comparison.
"""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_TAG = "checkpoint_artifact"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def mlflow_client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    from stlm.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def checkpoint_artifact(client, run_id: str) -> str | None:
    """The run's checkpoint artifact path (``checkpoints/best.ckpt`` preferred), or None if it logged none."""
    files = [a.path for a in client.list_artifacts(run_id, CHECKPOINT_DIR) if a.path.endswith(".ckpt")]
    if not files:
        return None
    best = [f for f in files if f.endswith("/best.ckpt")]
    return (best or sorted(files))[0]


def register_checkpoint(name: str, run_id: str, tracking_uri: str | None = None, client=None):
    """Register the checkpoint of ``run_id`` as a new version of model ``name`` (created if missing)."""
    from mlflow.exceptions import MlflowException

    client = client or mlflow_client(tracking_uri)
    artifact = checkpoint_artifact(client, run_id)
    if artifact is None:
        raise ValueError(
            f"register={name!r}: run {run_id} logged no checkpoint under '{CHECKPOINT_DIR}/' (a fitted baseline is "
            "never trained and writes none); register a run of a trained model"
        )
    try:
        client.create_registered_model(name, description="stlm forecaster checkpoints (see stlm.tracking.registry)")
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise
    return client.create_model_version(
        name, source=f"runs:/{run_id}/{CHECKPOINT_DIR}", run_id=run_id, tags={CHECKPOINT_TAG: artifact}
    )


def versions_of_run(run_id: str, name: str | None = None, tracking_uri: str | None = None, client=None) -> list:
    """Registered versions whose source is ``run_id`` (of model ``name`` only, when given)."""
    client = client or mlflow_client(tracking_uri)
    query = f"run_id = '{run_id}'" + (f" and name = '{name}'" if name else "")
    return list(client.search_model_versions(query))


def set_alias(name: str, alias: str, version: str | int, tracking_uri: str | None = None, client=None) -> None:
    """Point ``models:/name@alias`` at ``version`` (moving it from any earlier version)."""
    client = client or mlflow_client(tracking_uri)
    client.set_registered_model_alias(name, alias, str(version))


def model_version_of(client, uri: str):
    body = uri[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, version = body.rpartition("/")
    if not name or not version:
        raise ValueError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if version == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"{uri!r}: model {name!r} has no versions; register one with stlm.train register={name}")
        return max(versions, key=lambda v: int(v.version))
    return client.get_model_version(name, version)


def resolve_checkpoint_from_uri(uri: str, tracking_uri: str | None = None, dst_dir: str | Path | None = None) -> Path:
    """A local checkpoint file for ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID[/path]`` or a
    run id, downloaded from the run's artifacts (into ``dst_dir``, else a temporary directory)."""
    import mlflow

    from stlm.tracking.store import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(tracking_uri)
    if uri.startswith("models:/"):
        version = model_version_of(client, uri)
        run_id, artifact = version.run_id, version.tags.get(CHECKPOINT_TAG)
    elif uri.startswith("runs:/"):
        run_id, _, artifact = uri[len("runs:/"):].partition("/")
        artifact = artifact if artifact.endswith(".ckpt") else None
    elif _RUN_ID.match(uri):
        run_id, artifact = uri, None
    else:
        raise ValueError(f"checkpoint uri {uri!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID or a "
                         "32-character MLflow run id")
    artifact = artifact or checkpoint_artifact(client, run_id)
    if artifact is None:
        raise FileNotFoundError(f"{uri!r}: run {run_id} has no checkpoint under '{CHECKPOINT_DIR}/'")
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact, dst_path=str(dst_dir) if dst_dir else None,
        tracking_uri=tracking_uri,
    )
    return Path(local)


def promote_run(run_id: str, alias: str, name: str | None = None, tracking_uri: str | None = None, client=None,
                label: str = ""):
    """Point ``models:/NAME@alias`` at the latest registered version of ``run_id`` and return that version.

    ``name`` chooses the registered model when the run has versions under several names; when the run has no
    version under ``name`` yet, its checkpoint is registered first. Without ``name`` the run must already have
    a version (``stlm.train register=NAME``). ``label`` names the run's configuration in error messages.
    """
    what = f"the best run {run_id}" + (f" ({label})" if label else "")
    client = client or mlflow_client(tracking_uri)
    versions = versions_of_run(run_id, name, client=client)
    if not versions:
        if name is None:
            raise ValueError(
                f"promote={alias!r}: {what} has no registered model version; train with register=NAME, or pass "
                "register=NAME to stlm.compare to register its checkpoint now (a fitted baseline has none: narrow "
                "the comparison to trained models, e.g. tag=model=stlm)"
            )
        try:
            versions = [register_checkpoint(name, run_id, client=client)]
        except ValueError as err:
            raise ValueError(f"promote={alias!r}: {what}: {err}") from err
    names = sorted({v.name for v in versions})
    if len(names) > 1:
        raise ValueError(f"promote={alias!r}: {what} is registered under several models {names}; pass "
                         "register=NAME to choose one")
    version = max(versions, key=lambda v: int(v.version))
    set_alias(version.name, alias, version.version, client=client)
    return version
