"""The one place that knows which backend runs: Databricks or the local twin.

Notebooks call these functions and the real Databricks APIs; everything backend-specific happens here.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import warnings
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
import pandas as pd

from helpers.config import PROJECT_ROOT, Settings, get_settings, smoke_run, smoke_sizes

EXPERIMENT_NAME = "serving-architectures"
_current: Settings | None = None


def _widget_values(names: list[str]) -> dict[str, str]:
    """Values of Databricks widgets (a job task's parameters arrive as widgets) among ``names``."""
    from databricks.sdk.runtime import dbutils

    values = {}
    for name in names:
        try:
            values[name] = dbutils.widgets.get(name)
        except Exception:  # no such widget: the notebook's own value stands
            continue
    return values


def _apply_widgets(namespace: dict[str, Any]) -> dict[str, str]:
    """Set the notebook's parameters from widgets of the same name (a job task's parameters are widgets).

    Every plain value (str, int, float, bool, None) of the calling notebook is a candidate; a widget's text
    is converted to the type of the notebook's value. Returns the widgets found.
    """
    from helpers.local.notebook_io import coerce_like

    plain = (str, int, float, bool, type(None))
    names = [n for n, v in namespace.items() if not n.startswith("_") and isinstance(v, plain)]
    found = _widget_values(names)
    for name, text in found.items():
        current = namespace[name]
        namespace[name] = text if current is None else coerce_like(current, text, name)
    return found


def settings(**overrides: Any) -> Settings:
    """Resolve settings (notebook parameters win over ``HELPERS_*`` variables) and remember them.

    On a Databricks cluster, a widget (set by a job's task parameters) wins over the notebook's value of the
    same name: every parameter of the calling notebook is set from its widget here, first. With
    ``HELPERS_SMOKE=1`` the notebook's sizes are then capped at ``config.SMOKE_SIZES`` (the one smoke switch).
    """
    global _current
    caller = inspect.currentframe().f_back  # type: ignore[union-attr]
    namespace = caller.f_globals if caller else {}
    _current = get_settings(**overrides)
    if _current.backend == "databricks" and os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        widgets = _apply_widgets(namespace)
        _current = get_settings(**{**overrides, **{k: v for k, v in widgets.items() if k in overrides}})
    if smoke_run():
        smaller = smoke_sizes(namespace)
        namespace.update(smaller)
        _current = get_settings(**{**overrides, **{k: v for k, v in smaller.items() if k in overrides}})
        if smaller:
            print("smoke run (HELPERS_SMOKE=1):", ", ".join(f"{k}={v}" for k, v in smaller.items()))
    if _current.backend == "local":
        _current.state_dir.mkdir(parents=True, exist_ok=True)
        os.environ["HELPERS_STATE_DIR"] = str(_current.state_dir)  # child processes share the same state
    return _current


def current_settings() -> Settings:
    return _current or settings()


# The demo's and a validated source's integer columns have no missing values, the case MLflow's hint (MLflow
# 3.8, the runtime's) warns about at every signature inferred from them; on both backends.
warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column", UserWarning)


def _local_mlflow(state_dir: Path) -> None:
    # The sqlite store logs its schema migrations at INFO in every process (no such store on Databricks).
    for logger in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    from helpers.local.server.layout import mlflow_artifacts, mlflow_uri

    uri = mlflow_uri(state_dir)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT_NAME) is None:
        mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=mlflow_artifacts(state_dir).as_uri())
    mlflow.set_experiment(EXPERIMENT_NAME)


def feature_engineering_client(cfg: Settings | None = None) -> Any:
    """``FeatureEngineeringClient`` on Databricks, its local twin elsewhere; MLflow is set up for both."""
    cfg = cfg or current_settings()
    if cfg.backend == "databricks":
        from databricks.feature_engineering import FeatureEngineeringClient

        mlflow.set_registry_uri("databricks-uc")
        return FeatureEngineeringClient()
    from helpers.local.continuous_sync import resume
    from helpers.local.feature_client import LocalFeatureEngineeringClient

    _local_mlflow(cfg.state_dir)
    resume(
        cfg.state_dir
    )  # CONTINUOUS online tables keep syncing after `make stop` or a reboot, as on Databricks
    return LocalFeatureEngineeringClient(cfg.state_dir)


def workspace_client(cfg: Settings | None = None) -> Any:
    """A real ``databricks.sdk.WorkspaceClient``: the workspace on Databricks, the local server elsewhere."""
    from databricks.sdk import WorkspaceClient

    cfg = cfg or current_settings()
    if cfg.backend == "databricks":
        return WorkspaceClient()
    from helpers.local.server.process import ensure_server

    _local_mlflow(cfg.state_dir)
    server = ensure_server(cfg.state_dir)
    return WorkspaceClient(host=server.url, token=server.token, auth_type="pat")


def spark_session(cfg: Settings | None = None) -> Any:
    """The notebook's ``spark``: the active SparkSession on Databricks, a small local stand-in elsewhere.

    The local one runs the few statements the notebooks use (``ALTER TABLE ... SET TBLPROPERTIES``,
    ``DROP TABLE``, ``spark.table``, ``createDataFrame(...).write.saveAsTable``) over the twin's Delta tables
    and refuses anything else by name.
    """
    cfg = cfg or current_settings()
    if cfg.backend == "databricks":
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate()
    from helpers.local.spark import LocalSparkSession

    return LocalSparkSession(cfg.state_dir)


def to_backend_df(df: pd.DataFrame) -> Any:
    """The frame type the backend's feature client wants: Spark on Databricks, pandas locally."""
    if current_settings().backend == "databricks":
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate().createDataFrame(df)
    return df


def notebook_task_path(relative: str) -> str:
    """The ``notebook_path`` of a notebook task running this repository's ``relative`` notebook.

    Locally the jobs service resolves repository-relative paths. On Databricks the repository is a Git
    folder and a notebook task needs the absolute workspace path (``/Users/<you>/<repo>/notebooks/jobs/x``,
    no ``/Workspace`` prefix, no ``.ipynb``).
    """
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"relative must be a repository path like 'notebooks/jobs/x', got {relative!r}")
    if path.suffix == ".ipynb":
        path = path.with_suffix("")
    if current_settings().backend == "databricks":
        root = repository_root(_current_notebook_path()) or PurePosixPath(PROJECT_ROOT.as_posix())
        if root.parts[:2] == ("/", "Workspace"):
            root = PurePosixPath("/", *root.parts[2:])
        return str(root / path)
    return path.as_posix()


def repository_root(notebook_path: str) -> PurePosixPath | None:
    """The repository's workspace folder: the one above the ``notebooks`` folder of a running notebook.

    ``helpers`` may come from the bundle's wheel (site-packages), so its own location does not say where the
    notebooks are; the running notebook's path does (a Git folder, or a bundle's ``.../files``).
    """
    parts = PurePosixPath(notebook_path).parts
    if "notebooks" not in parts[:-1]:
        return None
    last = len(parts) - 1 - parts[::-1].index("notebooks")
    return PurePosixPath(*parts[:last])


def _current_notebook_path() -> str:
    """The workspace path of the notebook running on this cluster ("" off a cluster)."""
    if not os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return ""
    from databricks.sdk.runtime import dbutils

    context = dbutils.notebook.entry_point.getDbutils().notebook().getContext()
    return str(context.notebookPath().get())


def to_pandas(df: Any) -> pd.DataFrame:
    """A pandas frame from whatever a feature client returned."""
    return df if isinstance(df, pd.DataFrame) else df.toPandas()


def ensure_schema(cfg: Settings | None = None) -> None:
    """Create the Unity Catalog schema if needed (locally, a name is enough)."""
    cfg = cfg or current_settings()
    if cfg.backend == "databricks":
        from pyspark.sql import SparkSession

        SparkSession.builder.getOrCreate().sql(f"CREATE SCHEMA IF NOT EXISTS {cfg.catalog}.{cfg.schema}")


def create_python_function(name: str, params: dict[str, str], returns: str, body: str) -> str:
    """Register a Python UDF under a UC name (``CREATE FUNCTION ... LANGUAGE PYTHON``); returns the SQL."""
    from helpers.local.functions import FunctionRegistry, PythonFunction

    cfg = current_settings()
    if cfg.backend == "databricks":
        from pyspark.sql import SparkSession

        sql = PythonFunction(name, params, returns, body).create_sql()
        SparkSession.builder.getOrCreate().sql(sql)
        return sql
    return FunctionRegistry(cfg.state_dir).create(name, params, returns, body).create_sql()


def wait_for_publish(
    published: Any, timeout: timedelta = timedelta(minutes=30), poll_seconds: float = 10
) -> Any:
    """Wait until a ``publish_table`` has landed in the online store; returns ``published``.

    On Databricks publishing runs as a pipeline after ``publish_table`` returns, so an endpoint queried at
    once may still see the old rows: this polls the pipeline (printing each new state) and raises on failure
    or timeout. A ``CONTINUOUS`` pipeline never completes: it is ready once it runs. Locally
    ``publish_table`` has synced before it returns (and a continuous table is followed from then on).
    """
    if current_settings().backend != "databricks":
        return published
    from databricks.sdk import WorkspaceClient

    w, started, last = WorkspaceClient(), time.monotonic(), None
    while True:
        pipeline = w.pipelines.get(published.pipeline_id)
        updates = pipeline.latest_updates or []
        state = updates[0].state.value if updates and updates[0].state else "QUEUED"
        if state != last:
            print(f"  {time.monotonic() - started:6.1f} s  publishing {published.online_table_name}: {state}")
            last = state
        if state == "COMPLETED" or (state == "RUNNING" and pipeline.spec and pipeline.spec.continuous):
            return published
        if state in ("FAILED", "CANCELED"):
            where = f"see pipeline {published.pipeline_id}"
            raise RuntimeError(f"publishing {published.online_table_name} ended {state}; {where}")
        if time.monotonic() - started > timeout.total_seconds():
            raise TimeoutError(f"publishing {published.online_table_name} not done after {timeout} ({state})")
        time.sleep(poll_seconds)


def drop_python_function(name: str) -> None:
    """Drop a function registered with :func:`create_python_function` (``DROP FUNCTION``)."""
    cfg = current_settings()
    if cfg.backend == "databricks":
        from pyspark.sql import SparkSession

        SparkSession.builder.getOrCreate().sql(f"DROP FUNCTION IF EXISTS {name}")
        return
    from helpers.local.functions import FunctionRegistry

    FunctionRegistry(cfg.state_dir).delete(name)


def job_parameters(**defaults: Any) -> dict[str, Any]:
    """A job notebook's parameters over ``defaults``: widgets on Databricks, the job run's values locally.

    Values are converted to the type of their default (job parameters travel as strings).
    """
    from helpers.local.notebook_io import coerce_like
    from helpers.local.notebook_io import job_parameters as local_job_parameters

    if current_settings().backend == "databricks":
        from databricks.sdk.runtime import dbutils

        values = {}
        for name, default in defaults.items():
            dbutils.widgets.text(name, str(default))
            values[name] = coerce_like(default, dbutils.widgets.get(name), name)
        return values
    return local_job_parameters(**defaults)


def notebook_exit(value: str) -> None:
    """End a job notebook with ``value`` as its output (``dbutils.notebook.exit`` on Databricks).

    Locally the value is recorded for ``runs/get-output`` and the notebook goes on: call it last.
    """
    if current_settings().backend == "databricks":
        from databricks.sdk.runtime import dbutils

        dbutils.notebook.exit(value)
        return
    from helpers.local.notebook_io import exit_notebook

    exit_notebook(value)


def served_entities(endpoint_name: str) -> pd.DataFrame:
    """Every served entity an endpoint ever had: ``served_entity_id`` -> name and model version.

    It names the version behind an inference table's ``served_entity_id``: Databricks keeps this in the
    ``system.serving.served_entities`` system table, the local server in its ``workspace.db``.
    """
    columns = ["served_entity_id", "served_entity_name", "entity_name", "entity_version"]
    cfg = current_settings()
    if cfg.backend == "databricks":
        from pyspark.sql import SparkSession
        from pyspark.sql.functions import col

        frame = SparkSession.builder.getOrCreate().table("system.serving.served_entities")
        return frame.where(col("endpoint_name") == endpoint_name).select(*columns).toPandas()
    from helpers.local.server.endpoint_store import served_entities as recorded

    return pd.DataFrame(recorded(cfg.state_dir, endpoint_name), columns=columns)
