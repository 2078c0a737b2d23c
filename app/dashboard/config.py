"""The app's configuration: names of the job and the endpoints, read from the environment.

On Databricks Apps, ``app.yaml`` fills these from the app's resources (``valueFrom``); locally, the defaults
match what notebooks 03 and 05 create.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from databricks.sdk import WorkspaceClient


@dataclass(frozen=True)
class AppConfig:
    shelf_job_name: str
    shelf_job_id: int | None  # set by a Databricks Apps job resource; wins over the name
    shelf_results_endpoint: str
    fraud_endpoint: str
    fraud_threshold: float
    refresh_seconds: float
    runs_shown: int


def _number(name: str, default: str, kind: type[int] | type[float]) -> int | float:
    raw = os.environ.get(name, default).strip()
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"environment variable {name} must be positive, got {raw!r}")
    return value


def load_config() -> AppConfig:
    """The configuration from the environment; a ValueError names a bad variable."""
    job_id = os.environ.get("SHELF_JOB_ID", "").strip()
    if job_id and not job_id.isdigit():
        raise ValueError(f"environment variable SHELF_JOB_ID must be a job id, got {job_id!r}")
    threshold = float(_number("FRAUD_THRESHOLD", "0.5", float))
    if threshold >= 1:
        raise ValueError(f"environment variable FRAUD_THRESHOLD must be below 1, got {threshold}")
    return AppConfig(
        shelf_job_name=os.environ.get("SHELF_JOB_NAME", "shelf_layout_optimization"),
        shelf_job_id=int(job_id) if job_id else None,
        shelf_results_endpoint=os.environ.get("SHELF_RESULTS_ENDPOINT", "shelf-layouts"),
        fraud_endpoint=os.environ.get("FRAUD_ENDPOINT", "fraud-scoring"),
        fraud_threshold=threshold,
        refresh_seconds=float(_number("APP_REFRESH_SECONDS", "2", float)),
        runs_shown=int(_number("APP_RUNS_SHOWN", "10", int)),
    )


@cache
def workspace_client() -> WorkspaceClient:
    """The one client, from the environment: Databricks Apps' credentials, or ``make app``'s local server."""
    return WorkspaceClient()
