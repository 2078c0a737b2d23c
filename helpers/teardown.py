"""Delete what the notebooks created: endpoints, the job, feature specs, the online store, the monitor,
tables, models and functions. It uses only the real APIs, so the same call cleans a Databricks workspace and
the local twin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from helpers import platform
from helpers.config import Settings
from helpers.features import ratio_feature
from helpers.names import ProjectNames


@dataclass(frozen=True)
class DemoResources:
    """Names of everything the demo notebooks create (tables, specs, models and functions fully qualified)."""

    endpoints: tuple[str, ...]
    jobs: tuple[str, ...]
    feature_specs: tuple[str, ...]
    online_stores: tuple[str, ...]
    monitors: tuple[str, ...]  # data-profiling monitors, by the table they watch
    tables: tuple[str, ...]  # feature tables (fe.drop_table)
    plain_tables: tuple[str, ...]  # plain Delta tables, such as the inference table (DROP TABLE)
    models: tuple[str, ...]
    functions: tuple[str, ...]


def demo_resources(cfg: Settings) -> DemoResources:
    """What the notebooks create under the names ``cfg`` gives them (``helpers.names.ProjectNames``)."""
    names = ProjectNames.of(cfg)
    ratio = ratio_feature(cfg)
    return DemoResources(
        endpoints=names.of_kind("endpoint"),
        jobs=names.of_kind("job"),
        feature_specs=names.of_kind("feature spec"),
        online_stores=names.of_kind("online store"),  # deleting a store drops its online tables
        monitors=names.of_kind("monitor"),
        tables=names.of_kind("table"),
        plain_tables=names.of_kind("plain table"),
        models=names.of_kind("model"),
        functions=(ratio.udf_name,) if ratio else (),
    )


def _absent(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(
        s in text
        for s in ("does not exist", "not found", "notfound", "not_found", "resourcedoesnotexist", "no such")
    )


def teardown(w: Any, fe: Any, resources: DemoResources) -> pd.DataFrame:
    """Delete each resource (endpoints first: they serve the specs and models); one row per resource."""
    client = MlflowClient()

    def delete_job(name: str) -> None:
        ids = [job.job_id for job in w.jobs.list(name=name)]
        if not ids:
            raise LookupError(f"job {name} does not exist")
        for job_id in ids:
            w.jobs.delete(job_id)

    def delete_monitor(table: str) -> None:  # before its table: a monitor is addressed by the table's id
        w.data_quality.delete_monitor("table", w.tables.get(table).table_id)

    steps: list[tuple[str, tuple[str, ...], Callable[[str], Any]]] = [
        ("endpoint", resources.endpoints, w.serving_endpoints.delete),
        ("job", resources.jobs, delete_job),
        ("feature spec", resources.feature_specs, lambda n: fe.delete_feature_spec(name=n)),
        ("online store", resources.online_stores, lambda n: fe.delete_online_store(name=n)),
        ("monitor", resources.monitors, delete_monitor),
        ("table", resources.tables, lambda n: fe.drop_table(name=n)),
        ("plain table", resources.plain_tables, lambda n: platform.spark_session().sql(f"DROP TABLE {n}")),
        ("model", resources.models, client.delete_registered_model),
        ("function", resources.functions, platform.drop_python_function),
    ]
    rows = []
    for kind, names, delete in steps:
        for name in names:
            try:
                delete(name)
                outcome = "deleted"
            except Exception as error:  # keep going: one leftover must not block the rest
                outcome = "absent" if _absent(error) else f"failed: {type(error).__name__}: {error}"
            rows.append({"kind": kind, "name": name, "outcome": outcome})
    return pd.DataFrame(rows)
