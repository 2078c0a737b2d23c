"""Jobs API handlers (``/api/2.2/jobs/...``, also under ``/api/2.1``; the routes are in ``app.py``).

The handlers parse requests by hand so every bad input gets Databricks' error body, call the app's
:class:`helpers.local.jobs.LocalJobs` (``app.state.jobs``) in a worker thread, and render its records in the
shapes ``databricks-sdk`` parses (``Job``, ``Run``, ``RunTask``, ``RunOutput``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from helpers.local.job_runner import OUTPUT_LIMIT
from helpers.local.job_store import JobRecord, RunRecord, State, TaskRunRecord
from helpers.local.jobs import LocalJobs
from helpers.local.server.errors import bad_request, unavailable
from helpers.local.server.limits import read_object

log = logging.getLogger(__name__)
NOTEBOOKS_ROOT_ENV = "HELPERS_JOBS_NOTEBOOKS_ROOT"


def start_jobs(state_dir: Path, *, notebooks_root: Path | None = None, max_workers: int = 2) -> LocalJobs:
    """Open the job store, close runs a dead server left active, start the runner threads and, if jobs
    exist, a job process for their next run.

    Notebook tasks resolve inside ``notebooks_root``: by default ``$HELPERS_JOBS_NOTEBOOKS_ROOT`` if set
    (tests point it at fixture notebooks), else the project's ``notebooks/``.
    """
    root = notebooks_root or os.environ.get(NOTEBOOKS_ROOT_ENV) or None
    jobs = LocalJobs(state_dir, notebooks_root=Path(root) if root else None, max_workers=max_workers)
    closed = jobs.recover()
    if closed:
        log.warning("closed %d job run(s) left active by a stopped server: %s", len(closed), closed)
    if jobs.list_jobs(limit=1)[0]:
        jobs.executor.processes.fill()  # jobs exist: the next run's process starts before it is asked for
    return jobs


def service(request: Request) -> LocalJobs:
    """The app's jobs service (``app.state.jobs``, set while the server runs)."""
    jobs: LocalJobs | None = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise unavailable("The jobs service is not running.")
    return jobs


async def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(method, *args, **kwargs)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _query_int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not -(2**63) <= value < 2**63:
        raise bad_request(f"{name} must be a 64-bit integer, got {raw[:100]!r}")
    return value


def _query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise bad_request(f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1")


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise bad_request(f"{name} is required")
    return value


def _page(request: Request) -> int:
    """``page_token`` (from a previous answer) wins over the deprecated ``offset``."""
    token = request.query_params.get("page_token")
    if token:
        if not token.isdigit() or len(token) > 18:
            raise bad_request(f"page_token {token[:100]!r} is not a token this server issued")
        return int(token)
    return _query_int(request, "offset", 0) or 0


def _paged(key: str, items: list[dict[str, Any]], offset: int, has_more: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {key: items, "has_more": has_more}
    if has_more:
        answer["next_page_token"] = str(offset + len(items))
    return answer


async def create_job(request: Request) -> dict[str, Any]:
    job = await _call(service(request).create_job, await read_object(request))
    return {"job_id": job.job_id}


async def get_job(request: Request) -> dict[str, Any]:
    job_id = _required(_query_int(request, "job_id"), "job_id")
    return job_json(await _call(service(request).get_job, job_id))


async def list_jobs(request: Request) -> dict[str, Any]:
    offset = _page(request)
    limit = _query_int(request, "limit", 20)
    jobs, has_more = await _call(service(request).list_jobs, request.query_params.get("name"), offset, limit)
    expand = _query_bool(request, "expand_tasks")
    return _paged("jobs", [job_json(j, expand_tasks=expand) for j in jobs], offset, has_more)


async def reset_job(request: Request) -> dict[str, Any]:
    body = await read_object(request)
    job_id = _required(body.get("job_id"), "job_id")
    await _call(service(request).reset_job, job_id, _required(body.get("new_settings"), "new_settings"))
    return {}


async def update_job(request: Request) -> dict[str, Any]:
    body = await read_object(request)
    job_id = _required(body.get("job_id"), "job_id")
    await _call(service(request).update_job, job_id, body.get("new_settings"), body.get("fields_to_remove"))
    return {}


async def delete_job(request: Request) -> dict[str, Any]:
    body = await read_object(request)
    await _call(service(request).delete_job, _required(body.get("job_id"), "job_id"))
    return {}


async def run_now(request: Request) -> dict[str, Any]:
    body = await read_object(request)
    run = await _call(
        service(request).run_now,
        _required(body.get("job_id"), "job_id"),
        job_parameters=body.get("job_parameters"),
        notebook_params=body.get("notebook_params"),
        idempotency_token=body.get("idempotency_token"),
        queue=body.get("queue"),
        workspace_url=str(request.base_url).rstrip("/"),
    )
    return {"run_id": run.run_id, "number_in_job": run.run_id}


async def get_run(request: Request) -> dict[str, Any]:
    run_id = _required(_query_int(request, "run_id"), "run_id")
    run = await _call(service(request).get_run, run_id)
    return run_json(run, resolved_values=_query_bool(request, "include_resolved_values"))


async def list_runs(request: Request) -> dict[str, Any]:
    offset = _page(request)
    runs, has_more = await _call(
        service(request).list_runs,
        job_id=_query_int(request, "job_id"),
        active_only=_query_bool(request, "active_only"),
        completed_only=_query_bool(request, "completed_only"),
        offset=offset,
        limit=_query_int(request, "limit", 20),
        start_time_from=_query_int(request, "start_time_from"),
        start_time_to=_query_int(request, "start_time_to"),
    )
    expand = _query_bool(request, "expand_tasks")
    return _paged("runs", [run_json(r, expand_tasks=expand) for r in runs], offset, has_more)


async def get_run_output(request: Request) -> dict[str, Any]:
    run_id = _required(_query_int(request, "run_id"), "run_id")
    task, run = await _call(service(request).get_output, run_id)
    return output_json(task, run)


async def cancel_run(request: Request) -> dict[str, Any]:
    body = await read_object(request)
    await _call(service(request).cancel_run, _required(body.get("run_id"), "run_id"))
    return {}


# Wire shapes


def job_json(job: JobRecord, expand_tasks: bool = True) -> dict[str, Any]:
    settings = dict(job.settings)
    if not expand_tasks:
        settings.pop("tasks", None)
        settings.pop("job_clusters", None)
    return {
        "job_id": job.job_id,
        "creator_user_name": job.creator_user_name,
        "run_as_user_name": job.creator_user_name,
        "created_time": job.created_time,
        "settings": settings,
        "has_more": False,
    }


def state_json(state: State) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "life_cycle_state": state.life_cycle_state,
        "state_message": state.state_message,
        "user_cancelled_or_timedout": state.user_cancelled_or_timedout,
    }
    if state.result_state:
        answer["result_state"] = state.result_state
    if state.life_cycle_state == "QUEUED":
        answer["queue_reason"] = state.state_message
    return answer


def status_json(state: State) -> dict[str, Any]:
    """The newer ``status`` block: v2 state plus queue or termination details."""
    if not state.active:
        details = {
            "code": state.termination_code,
            "type": state.termination_type,
            "message": state.state_message,
        }
        return {"state": "TERMINATED", "termination_details": details}
    answer: dict[str, Any] = {"state": state.life_cycle_state}
    if state.life_cycle_state == "QUEUED":
        answer["queue_details"] = {"code": "MAX_CONCURRENT_RUNS_REACHED", "message": state.state_message}
    return answer


def _elapsed(start: int, end: int) -> int:
    if not start:
        return 0
    return max(0, (end or int(time.time() * 1000)) - start)


def task_json(task: TaskRunRecord, resolved_values: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "run_id": task.run_id,
        "task_key": task.task_key,
        "notebook_task": task.task["notebook_task"],
        "state": state_json(task.state),
        "status": status_json(task.state),
        "start_time": task.start_time,
        "end_time": task.end_time,
        "setup_duration": task.setup_duration,
        "execution_duration": task.execution_duration,
        "cleanup_duration": task.cleanup_duration,
        "run_duration": _elapsed(task.start_time, task.end_time),
        "attempt_number": 0,
    }
    for key in ("depends_on", "description", "timeout_seconds", "run_if"):
        if key in task.task:
            answer[key] = task.task[key]
    if task.output_path:
        answer["run_page_url"] = Path(task.output_path).as_uri()
    if resolved_values and task.parameters is not None:
        answer["resolved_values"] = {"notebook_task": {"base_parameters": task.parameters}}
    return answer


def run_json(run: RunRecord, expand_tasks: bool = True, resolved_values: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "job_id": run.job_id,
        "run_id": run.run_id,
        "number_in_job": run.run_id,
        "original_attempt_run_id": run.run_id,
        "attempt_number": 0,
        "creator_user_name": run.creator_user_name,
        "run_name": run.run_name,
        "run_type": "JOB_RUN",
        "trigger": "ONE_TIME",
        "format": "MULTI_TASK",
        "state": state_json(run.state),
        "status": status_json(run.state),
        "start_time": run.start_time,
        "end_time": run.end_time,
        # Databricks reports these as 0 for multitask runs; each task carries its own.
        "setup_duration": 0,
        "execution_duration": 0,
        "cleanup_duration": 0,
        "queue_duration": run.queue_duration,
        "run_duration": _elapsed(run.start_time, run.end_time),
        "job_parameters": run.job_parameters,
        "run_page_url": run.run_page_url,
        "has_more": False,
    }
    if run.overriding_parameters:
        answer["overriding_parameters"] = run.overriding_parameters
    if expand_tasks:
        answer["tasks"] = [task_json(t, resolved_values) for t in run.tasks]
    return answer


def output_json(task: TaskRunRecord, run: RunRecord) -> dict[str, Any]:
    metadata = {
        **{k: v for k, v in task_json(task).items() if k != "task_key"},
        "job_id": run.job_id,
        "job_run_id": run.run_id,
        "number_in_job": task.run_id,
        "run_name": task.task_key,
        "run_type": "JOB_RUN",
        "job_parameters": run.job_parameters,
    }
    answer: dict[str, Any] = {"metadata": metadata, "notebook_output": {}}
    if task.exit_value is not None:
        result = task.exit_value
        answer["notebook_output"] = {"result": result[:OUTPUT_LIMIT], "truncated": len(result) > OUTPUT_LIMIT}
    if task.error:
        answer["error"] = task.error
    if task.error_trace:
        answer["error_trace"] = task.error_trace
    return answer
