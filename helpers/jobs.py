"""The client side of an asynchronous job: define it once, start runs, wait for them, read how they ended.

Only ``databricks.sdk`` calls, so the same code drives the real Jobs API and the local workspace server.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from databricks.sdk import WorkspaceClient
from databricks.sdk.service.compute import ClusterSpec, DataSecurityMode, Library
from databricks.sdk.service.jobs import (
    JobCluster,
    JobParameterDefinition,
    JobSettings,
    NotebookTask,
    QueueSettings,
    Run,
    RunLifeCycleState,
    RunResultState,
    Source,
    Task,
)

from helpers import platform
from helpers.config import Settings
from helpers.names import validate_identifier

SETTINGS_TAG = "settings_fingerprint"
JOB_CLUSTER_KEY = "job_cluster"
# What the runtime lacks (the pinned feature engineering client, pandera), for a job of a Git folder.
CLUSTER_REQUIREMENTS = "requirements-databricks.txt"
_TERMINAL = {RunLifeCycleState.TERMINATED, RunLifeCycleState.SKIPPED, RunLifeCycleState.INTERNAL_ERROR}


def job_notebook_path(name: str) -> str:
    """The notebook task path of ``notebooks/jobs/<name>`` on this backend (see ``platform``)."""
    validate_identifier(name, "job notebook name")
    return platform.notebook_task_path(f"notebooks/jobs/{name}")


def job_compute(cfg: Settings | None = None) -> JobCluster:
    """The job cluster every job of this project runs on: single node, the target Databricks Runtime ML.

    ``spark_version`` and ``node_type_id`` come from the settings (``helpers/project.yml``), the variables the
    bundle's jobs use, so a job created here and one deployed with ``databricks bundle deploy`` run on the
    same compute (``make check-databricks`` compares them). Dedicated (single user) access mode: Unity
    Catalog, feature lookups and online stores work on it.
    """
    cfg = cfg or platform.current_settings()
    return JobCluster(
        job_cluster_key=JOB_CLUSTER_KEY,
        new_cluster=ClusterSpec(
            spark_version=cfg.spark_version,
            node_type_id=cfg.node_type_id,
            num_workers=0,
            data_security_mode=DataSecurityMode.SINGLE_USER,
            spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*, 4]"},
            custom_tags={"ResourceClass": "SingleNode"},
        ),
    )


def cluster_libraries() -> list[Library]:
    """The task libraries that bring the project's pins the runtime lacks (``requirements-databricks.txt``).

    A bundle job installs the ``helpers`` wheel instead, which requires the same.
    """
    path = platform.notebook_task_path(CLUSTER_REQUIREMENTS)
    if path.startswith("/") and not path.startswith("/Workspace/"):
        path = f"/Workspace{path}"  # a workspace file, as a library path names it
    return [Library(requirements=path)]


def job_settings(
    name: str,
    notebook_path: str,
    parameters: Mapping[str, str],
    *,
    description: str | None = None,
    max_concurrent_runs: int = 10,
    timeout_seconds: int = 3600,
    task_key: str = "main",
    compute: JobCluster | None = None,
) -> JobSettings:
    """The definition of a one-notebook job on :func:`job_compute`, as ``w.jobs.create`` takes it.

    ``parameters`` are the job parameters and their defaults (``{{job.run_id}}`` and other dynamic value
    references are resolved when a run starts). Runs beyond ``max_concurrent_runs`` wait in the queue.
    """
    cluster = compute or job_compute()
    return JobSettings(
        name=name,
        description=description,
        job_clusters=[cluster],
        tasks=[
            Task(
                task_key=task_key,
                job_cluster_key=cluster.job_cluster_key,
                notebook_task=NotebookTask(notebook_path=notebook_path, source=Source.WORKSPACE),
                libraries=cluster_libraries(),
                timeout_seconds=timeout_seconds,
            )
        ],
        parameters=[JobParameterDefinition(name=k, default=str(v)) for k, v in parameters.items()],
        max_concurrent_runs=max_concurrent_runs,
        timeout_seconds=timeout_seconds,
        queue=QueueSettings(enabled=True),
    )


def create_or_update_job(
    w: WorkspaceClient,
    name: str,
    notebook_path: str,
    parameters: Mapping[str, str],
    **options: Any,
) -> int:
    """The id of the one-notebook job called ``name``: created, reused as is, or reset to these settings.

    The job is :func:`job_settings` (``options`` are its keyword arguments). A tag holds a fingerprint of the
    settings, so an unchanged job is found without rewriting it.
    """
    definition = job_settings(name, notebook_path, parameters, **options)
    settings: dict[str, Any] = {
        key: getattr(definition, key) for key in definition.as_dict() if getattr(definition, key) is not None
    }
    fingerprint = hashlib.sha256(
        json.dumps(JobSettings(**settings).as_dict(), sort_keys=True).encode()
    ).hexdigest()[:16]
    settings["tags"] = {SETTINGS_TAG: fingerprint}
    found = [job for job in w.jobs.list(name=name) if job.settings and job.settings.name == name]
    if len(found) > 1:
        ids = sorted(job.job_id for job in found if job.job_id is not None)
        raise ValueError(f"{len(found)} jobs are named {name!r} (ids {ids}); delete the extra ones")
    if not found:
        job_id = w.jobs.create(**settings).job_id
        print(f"created job {name!r} (job_id {job_id})")
        return int(job_id)
    job_id = int(found[0].job_id)
    tags = w.jobs.get(job_id).settings.tags or {}
    if tags.get(SETTINGS_TAG) == fingerprint:
        print(f"found job {name!r} (job_id {job_id}), settings unchanged")
    else:
        w.jobs.reset(job_id, new_settings=JobSettings(**settings))
        print(f"updated job {name!r} (job_id {job_id}) to the new settings")
    return job_id


def wait_for_runs(
    w: WorkspaceClient,
    run_ids: Sequence[int],
    timeout: timedelta = timedelta(minutes=20),
    *,
    max_poll_seconds: float = 2.0,
    progress: bool = True,
) -> list[Run]:
    """Poll until every run is terminal and return them (in ``run_ids`` order), printing each new state once.

    Polls back off from 0.25 s to ``max_poll_seconds``. A run that failed is returned like one that
    succeeded: look at ``run.state``. Raises TimeoutError naming the runs still active after ``timeout``
    (they keep running; cancel them if you must).
    """
    ids = [int(r) for r in run_ids]
    if not ids:
        raise ValueError("run_ids must name at least one run")
    if timeout <= timedelta(0):
        raise ValueError(f"timeout must be positive, got {timeout}")
    started = time.monotonic()
    deadline = started + timeout.total_seconds()
    delay, last = 0.25, ""
    while True:
        runs = [w.jobs.get_run(run_id) for run_id in ids]
        states = [run.state.life_cycle_state if run.state else None for run in runs]
        line = _describe(ids, states)
        if progress and line != last:
            print(f"  {time.monotonic() - started:6.1f} s  {line}", flush=True)
            last = line
        if all(s in _TERMINAL for s in states):
            return runs
        if time.monotonic() >= deadline:
            active = {
                i: s.value if s else "UNKNOWN" for i, s in zip(ids, states, strict=True) if s not in _TERMINAL
            }
            raise TimeoutError(
                f"run(s) {active} still active after {timeout}; they keep running "
                "(w.jobs.cancel_run(run_id) stops one)"
            )
        time.sleep(delay)
        delay = min(max_poll_seconds, delay * 1.5)


def wait_for_run(w: WorkspaceClient, run_id: int, timeout: timedelta = timedelta(minutes=20)) -> Run:
    """Poll one run until it is terminal (see ``wait_for_runs``)."""
    return wait_for_runs(w, [run_id], timeout)[0]


def _describe(ids: list[int], states: list[RunLifeCycleState | None]) -> str:
    if len(ids) == 1:
        return f"run {ids[0]}: {states[0].value if states[0] else '?'}"
    counts: dict[str, int] = {}
    for state in states:
        key = state.value if state else "?"
        counts[key] = counts.get(key, 0) + 1
    return f"{len(ids)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def succeeded(run: Run) -> bool:
    return bool(run.state and run.state.result_state == RunResultState.SUCCESS)


def run_output(w: WorkspaceClient, run: Run) -> str | None:
    """The notebook's exit value (``dbutils.notebook.exit``) of a one-task run, if it set one."""
    output = w.jobs.get_run_output(_task_run_id(run))
    return output.notebook_output.result if output.notebook_output else None


def run_error(w: WorkspaceClient, run: Run) -> str | None:
    """Why a run did not succeed; ``None`` if it succeeded.

    A notebook's exception is in the task's ``runs/get-output`` (``error``); the run's ``state_message`` says
    only "Workload failed, see run output for details". Without an ``error`` (a timeout, a cancel, a bad
    configuration) the state message is the reason.
    """
    if succeeded(run):
        return None
    output = w.jobs.get_run_output(_task_run_id(run))
    message = run.state.state_message if run.state else ""
    return output.error or message or "the run did not succeed and gave no reason"


def run_timings(run: Run) -> dict[str, float]:
    """Where a finished one-task run spent its time, in seconds (as the Jobs API reports it)."""
    task = (run.tasks or [None])[0]
    return {
        "queued": (run.queue_duration or 0) / 1000,
        "setup (compute + kernel start)": ((task.setup_duration if task else 0) or 0) / 1000,
        "notebook execution": ((task.execution_duration if task else 0) or 0) / 1000,
        "cleanup": ((task.cleanup_duration if task else 0) or 0) / 1000,
        "run total": ((run.end_time or 0) - (run.start_time or 0)) / 1000,
    }


def _task_run_id(run: Run) -> int:
    if not run.tasks or len(run.tasks) != 1:
        raise ValueError(f"run {run.run_id} has {len(run.tasks or [])} tasks; these helpers expect one")
    return int(run.tasks[0].run_id)
