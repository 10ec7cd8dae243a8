"""Which MLflow runs a comparison covers: experiments, a filter string, a tag, a sweep id -> one DataFrame.

Only finished training runs count (status ``FINISHED`` and a ``config_hash`` tag, which comparison runs lack).
The frame has one row per run and the columns of ``mlflow.search_runs``: ``run_id``, ``experiment_id``,
``start_time``, ``end_time``, ``params.*``, ``metrics.*``, ``tags.*``.
"""

from __future__ import annotations

import re
from typing import Sequence

import pandas as pd


def as_list(value) -> list[str]:
    """``None`` -> [], ``"a"`` -> ["a"], a list (or Hydra ListConfig) -> its items as strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def build_filter(filter_string: str | None = None, tag: str | None = None, sweep: str | None = None) -> str:
    """One MLflow filter string: finished runs, AND the user's filter, the tag ``KEY:VALUE``, the sweep id.

    The tag may also be written ``KEY=VALUE`` (quoted on a Hydra command line: ``'tag="model=stlm"'``).
    """
    parts = ["attributes.status = 'FINISHED'"]
    if filter_string:
        parts.append(f"({filter_string})" if " or " in filter_string.lower() else filter_string)
    if tag:
        match = re.match(r"^([^=:]+)[=:](.+)$", str(tag))
        if not match:
            raise ValueError(f"tag={tag!r}: expected KEY:VALUE, e.g. tag=model:stlm or tag=dataset:traffic")
        key, value = match.groups()
        parts.append(f"tags.`{key.strip()}` = '{value.strip()}'")
    if sweep:
        parts.append(f"tags.sweep_id = '{sweep}'")
    return " and ".join(parts)


def experiment_ids(client, experiments: Sequence[str]) -> list[str]:
    """Ids of the named experiments (all active experiments when none is named); unknown names are an error."""
    if not experiments:
        return [e.experiment_id for e in client.search_experiments()]
    ids, missing = [], []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        (missing.append(name) if exp is None else ids.append(exp.experiment_id))
    if missing:
        known = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"experiment={missing if len(missing) > 1 else missing[0]!r}: no such experiment in this "
                         f"tracking store; known experiments: {known}")
    return ids


def search_runs_frame(client, ids: list[str], filter_string: str) -> pd.DataFrame:
    """All matching runs (every page) as a frame in the layout of ``mlflow.search_runs``."""
    rows, token = [], None
    while True:
        page = client.search_runs(ids, filter_string=filter_string, max_results=1000, page_token=token)
        for run in page:
            row = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "status": run.info.status,
                   "start_time": run.info.start_time, "end_time": run.info.end_time}
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def select_runs(client, experiments=None, filter_string=None, tag=None, sweep=None) -> pd.DataFrame:
    """The finished training runs selected by the comparison's arguments; raises when none matches."""
    ids = experiment_ids(client, as_list(experiments))
    query = build_filter(filter_string, tag, sweep)
    frame = search_runs_frame(client, ids, query)
    if not frame.empty and "tags.config_hash" in frame:
        frame = frame[frame["tags.config_hash"].notna()]
    else:
        frame = frame.iloc[0:0]
    if frame.empty:
        raise ValueError(
            f"no finished training runs match experiment={as_list(experiments) or 'all'} and filter {query!r}; "
            "check the experiment name (mlflow ui lists them), the filter, tag or sweep id"
        )
    return frame.reset_index(drop=True)
