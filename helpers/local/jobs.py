"""The local Jobs service: Databricks job semantics over :mod:`job_store` and :mod:`job_runner`.

- ``run_now`` admits a run as Databricks does: below ``max_concurrent_runs`` it is ``PENDING`` until one
  of the ``max_workers`` runner threads picks it up; at the limit it waits ``QUEUED`` when queueing is
  enabled (job ``queue.enabled`` or the ``queue`` argument of ``run_now``) and is ``SKIPPED`` otherwise.
- Tasks of one run execute one after another in dependency order (Databricks may run independent tasks
  in parallel); ``run_if`` other than ``ALL_SUCCESS`` is refused.
- Invalid input raises ``ValueError`` with a message naming the bad argument; the HTTP layer answers it as
  ``400 INVALID_PARAMETER_VALUE``, as Databricks does for unknown job and run ids too.
"""

from __future__ import annotations

import getpass
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from helpers.config import PROJECT_ROOT
from helpers.local.job_process import kill_tree
from helpers.local.job_runner import (
    SERVER_STOPPED,
    JobRunExecutor,
    RunControl,
    now_ms,
    resolve_notebook_path,
)
from helpers.local.job_store import ACTIVE_STATES, JobRecord, JobStore, RunRecord, State, TaskRunRecord
from helpers.local.server.layout import workspace_db

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[\w\-.]{1,100}$")
_UNSUPPORTED_SETTINGS = ("schedule", "trigger", "continuous")
_OTHER_TASK_TYPES = (
    "spark_python_task",
    "python_wheel_task",
    "spark_jar_task",
    "spark_submit_task",
    "pipeline_task",
    "sql_task",
    "dbt_task",
    "run_job_task",
    "condition_task",
    "for_each_task",
)
MAX_TOKEN_LENGTH = 64


class LocalJobs:
    """Create jobs, trigger and watch runs; notebook tasks resolve inside ``notebooks_root``."""

    def __init__(self, state_dir: Path, notebooks_root: Path | None = None, max_workers: int = 2) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.state_dir = Path(state_dir)
        self.notebooks_root = Path(notebooks_root or PROJECT_ROOT / "notebooks").resolve()
        self.store = JobStore(workspace_db(self.state_dir))
        self.executor = JobRunExecutor(self.store, self.state_dir, self.notebooks_root)
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="job-run")
        self._lock = threading.RLock()
        self._controls: dict[int, RunControl] = {}
        self._stopping = False
        self.user = getpass.getuser()

    # Lifecycle

    def recover(self) -> list[int]:
        """Close every run a previous server left active (killing its orphaned notebook processes)."""
        closed = []
        for run in self.store.active_runs():
            for task in run.tasks:
                if task.pid and task.state.active:
                    kill_tree(task.pid, task.pid_started)
            self._close(run, State.internal_error(SERVER_STOPPED))
            closed.append(run.run_id)
        return closed

    def shutdown(self) -> None:
        """Stop running notebooks, close every active run as stopped by the server, release the store."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            for control in self._controls.values():
                control.request_stop("shutdown")
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.executor.close()
        self.recover()
        self.store.close()

    # Jobs

    def create_job(self, settings: dict[str, Any]) -> JobRecord:
        job = self.store.insert_job(self._validate(settings), self.user, now_ms())
        self.executor.processes.fill()  # a job exists: its first run should not wait for a kernel to start
        return job

    def get_job(self, job_id: Any) -> JobRecord:
        job = self.store.get_job(_int(job_id, "job_id"))
        if job is None:
            raise ValueError(f"Job {job_id} does not exist.")
        return job

    def list_jobs(
        self, name: str | None = None, offset: int = 0, limit: int = 20
    ) -> tuple[list[JobRecord], bool]:
        if not 1 <= limit <= 100:
            raise ValueError(f"limit must be between 1 and 100, got {limit}")
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        return self.store.list_jobs(name, offset, limit)

    def reset_job(self, job_id: Any, new_settings: Any) -> JobRecord:
        """Replace all of a job's settings (``jobs/reset``); active runs keep the ones they started with."""
        job = self.get_job(job_id)
        if not isinstance(new_settings, dict):
            raise ValueError("new_settings must be an object with the job's settings")
        self.store.replace_settings(job.job_id, self._validate(new_settings))
        return self.get_job(job.job_id)

    def update_job(self, job_id: Any, new_settings: Any = None, fields_to_remove: Any = None) -> JobRecord:
        """Change only the top-level settings given (``jobs/update``); ``fields_to_remove`` drops others."""
        job = self.get_job(job_id)
        if not isinstance(new_settings or {}, dict):
            raise ValueError("new_settings must be an object")
        if not isinstance(fields_to_remove or [], list):
            raise ValueError("fields_to_remove must be a list of setting names")
        merged = {k: v for k, v in job.settings.items() if k not in (fields_to_remove or [])}
        return self.reset_job(job.job_id, {**merged, **(new_settings or {})})

    def delete_job(self, job_id: Any) -> None:
        """Delete the job; its active runs are canceled, its run records stay readable."""
        job = self.get_job(job_id)
        runs, _ = self.store.list_runs(job.job_id, ACTIVE_STATES, None, 0, 10**9)
        for run in runs:
            self.cancel_run(run.run_id)
        self.store.delete_job(job.job_id)

    # Runs

    def run_now(
        self,
        job_id: Any,
        job_parameters: dict[str, Any] | None = None,
        notebook_params: dict[str, Any] | None = None,
        idempotency_token: str | None = None,
        queue: dict[str, Any] | None = None,
        workspace_url: str = "",
    ) -> RunRecord:
        job = self.get_job(job_id)
        if idempotency_token is not None and not (
            isinstance(idempotency_token, str) and 0 < len(idempotency_token) <= MAX_TOKEN_LENGTH
        ):
            raise ValueError(f"idempotency_token must be a string of 1 to {MAX_TOKEN_LENGTH} characters")
        overrides = _string_map(job_parameters, "job_parameters")
        legacy = _string_map(notebook_params, "notebook_params")
        settings = job.settings
        definitions = {p["name"]: p["default"] for p in settings.get("parameters", [])}
        if overrides and legacy:
            raise ValueError("job_parameters and notebook_params cannot be used together")
        if legacy and definitions:
            raise ValueError(
                "notebook_params cannot be used for a job with job parameters; pass job_parameters instead"
            )
        unknown = sorted(set(overrides) - set(definitions))
        if unknown:
            defined = sorted(definitions)
            raise ValueError(
                f"job_parameters {unknown} are not defined by job {job.job_id}; defined: {defined}"
            )
        queue_enabled = _queue_enabled(queue, "queue") if queue is not None else settings["queue"]["enabled"]
        with self._lock:
            if self._stopping:
                raise ValueError("the jobs service is shutting down")
            if idempotency_token is not None and (existing := self.store.run_by_token(idempotency_token)):
                return existing
            limit = settings["max_concurrent_runs"]
            if self.store.count_running(job.job_id) < limit:
                state = State("PENDING")
            elif queue_enabled and limit > 0:  # a limit of 0 skips every new run
                message = f"Queued due to reaching maximum concurrent runs of {limit}."
                state = State("QUEUED", state_message=message)
            else:
                state = State.skipped_max_concurrent(limit)
            start = now_ms()
            run = self.store.insert_run(
                RunRecord(
                    run_id=0,
                    job_id=job.job_id,
                    run_name=settings["name"],
                    settings=settings,
                    job_parameters=[
                        {"name": n, "default": d, "value": overrides.get(n, d)}
                        for n, d in definitions.items()
                    ],
                    overriding_parameters={"notebook_params": legacy} if legacy else {},
                    creator_user_name=self.user,
                    workspace_url=workspace_url,
                    start_time=start,
                    end_time=0 if state.active else start,
                    state=state,
                    idempotency_token=idempotency_token,
                ),
                _in_dependency_order(settings["tasks"]),
            )
            self.store.update_run(run.run_id, run_page_url=self._page_url(run))
            if state.life_cycle_state == "PENDING":
                self._submit(run.run_id)
        return self.get_run(run.run_id)

    def _page_url(self, run: RunRecord) -> str:
        run_dir = self.executor.run_dir(run.run_id)
        if len(run.tasks) == 1:
            return (run_dir / f"{run.tasks[0].task_key}.ipynb").as_uri()
        return run_dir.as_uri() + "/"

    def get_run(self, run_id: Any) -> RunRecord:
        run = self.store.get_run(_int(run_id, "run_id"))
        if run is None:
            task = self.store.get_task_run(_int(run_id, "run_id"))
            run = self.store.get_run(task.job_run_id) if task else None
        if run is None:
            raise ValueError(f"Run {run_id} does not exist.")
        return run

    def list_runs(
        self,
        job_id: Any = None,
        active_only: bool = False,
        completed_only: bool = False,
        offset: int = 0,
        limit: int = 20,
        start_time_from: int | None = None,
        start_time_to: int | None = None,
    ) -> tuple[list[RunRecord], bool]:
        if active_only and completed_only:
            raise ValueError("active_only and completed_only cannot both be true")
        if not 0 <= limit <= 25:
            raise ValueError(f"limit must be between 1 and 25 (0 means 25), got {limit}")
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        if job_id is not None:
            self.get_job(job_id)
        return self.store.list_runs(
            None if job_id is None else _int(job_id, "job_id"),
            ACTIVE_STATES if active_only else None,
            ACTIVE_STATES if completed_only else None,
            offset,
            limit or 25,
            start_time_from,
            start_time_to,
        )

    def get_output(self, run_id: Any) -> tuple[TaskRunRecord, RunRecord]:
        """The task run and its job run; a job run id is refused, as on Databricks."""
        number = _int(run_id, "run_id")
        task = self.store.get_task_run(number)
        if task is None:
            if self.store.get_run(number) is not None:
                raise ValueError(
                    "Retrieving the output of runs with multiple tasks is not supported. "
                    "Please retrieve the output of each individual task run instead."
                )
            raise ValueError(f"Run {run_id} does not exist.")
        run = self.store.get_run(task.job_run_id)
        assert run is not None  # a task run is written with its job run
        return task, run

    def cancel_run(self, run_id: Any) -> None:
        """Cancel a job run (or the job run a task run belongs to); a finished run is left as it is."""
        run = self.get_run(run_id)
        with self._lock:
            run = self.get_run(run.run_id)
            if not run.state.active:
                return
            control = self._controls.get(run.run_id)
            if control is not None and control.started:
                control.request_stop("cancel")
                return
            self._close(run, State.canceled())
            self._promote(run.job_id)

    # Scheduling

    def _submit(self, run_id: int) -> None:
        self._controls[run_id] = RunControl()
        self._pool.submit(self._execute, run_id)

    def _execute(self, run_id: int) -> None:
        control = self._controls[run_id]
        run = None
        try:
            with self._lock:
                run = self.store.get_run(run_id)
                if run is None or not run.state.active or control.stop.is_set():
                    return
                control.started = True
            self.executor.execute(run, control)
        except Exception as exc:  # a runner bug must not leave the run active forever
            log.exception("job run %s failed in the runner", run_id)
            if run is not None:
                self._close(run, State.internal_error(f"The local job runner failed: {exc!r}"))
        finally:
            with self._lock:
                self._controls.pop(run_id, None)
                if run is not None:
                    self._promote(run.job_id)

    def _promote(self, job_id: int) -> None:
        """Start queued runs of the job while it is below its concurrency limit (oldest first)."""
        if self._stopping:
            return
        job = self.store.get_job(job_id)
        while job is not None and self.store.count_running(job_id) < job.settings["max_concurrent_runs"]:
            queued = self.store.oldest_queued(job_id)
            if queued is None:
                return
            self.store.update_run(queued.run_id, State("PENDING"))
            for task in queued.tasks:
                self.store.update_task(task.run_id, State("PENDING"))
            self._submit(queued.run_id)

    def _close(self, run: RunRecord, state: State) -> None:
        end = now_ms()
        for task in run.tasks:
            if task.state.active:
                self.store.update_task(task.run_id, state, end_time=end if task.start_time else 0)
        self.store.update_run(run.run_id, state, end_time=end)

    # Settings

    def _validate(self, settings: Any) -> dict[str, Any]:
        if not isinstance(settings, dict):
            raise ValueError("the job settings must be a JSON object")
        for name in _UNSUPPORTED_SETTINGS:
            if settings.get(name):
                raise ValueError(f"{name} is not supported by the local workspace; trigger runs with run_now")
        name = settings.get("name", "Untitled")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        max_runs = settings.get("max_concurrent_runs", 1)
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or not 0 <= max_runs <= 1000:
            raise ValueError(f"max_concurrent_runs must be an integer from 0 to 1000, got {max_runs!r}")
        timeout = _seconds(settings.get("timeout_seconds", 0), "timeout_seconds")
        queue = _queue_enabled(settings.get("queue", {"enabled": False}), "queue")
        parameters = []
        for i, parameter in enumerate(_list(settings.get("parameters"), "parameters")):
            if not isinstance(parameter, dict) or not _KEY.match(str(parameter.get("name", ""))):
                raise ValueError(
                    f"parameters[{i}] needs a name of letters, digits, '_', '-', '.'; got {parameter!r}"
                )
            if "default" not in parameter:
                raise ValueError(f"parameters[{i}] ({parameter['name']!r}) needs a default")
            parameters.append(
                {"name": parameter["name"], "default": _string(parameter["default"], "default")}
            )
        names = [p["name"] for p in parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"parameters have duplicate names: {names}")
        tasks = self._validate_tasks(settings.get("tasks"))
        return {
            **settings,
            "name": name,
            "tasks": tasks,
            "parameters": parameters,
            "max_concurrent_runs": max_runs,
            "timeout_seconds": timeout,
            "queue": {"enabled": queue},
            "format": "MULTI_TASK",
        }

    def _validate_tasks(self, tasks: Any) -> list[dict[str, Any]]:
        if not isinstance(tasks, list) or not tasks:
            raise ValueError("tasks must be a non-empty list of tasks")
        keys: list[str] = []
        for i, task in enumerate(tasks):
            where = f"tasks[{i}]"
            if not isinstance(task, dict) or not _KEY.match(str(task.get("task_key", ""))):
                raise ValueError(f"{where}.task_key must be 1-100 letters, digits, '_', '-', '.'")
            if task["task_key"] in keys:
                raise ValueError(f"{where}.task_key {task['task_key']!r} is used twice")
            keys.append(task["task_key"])
            other = [t for t in _OTHER_TASK_TYPES if task.get(t)]
            notebook_task = task.get("notebook_task")
            if other or not isinstance(notebook_task, dict):
                raise ValueError(
                    f"{where}: only notebook_task is supported by the local workspace, got {other}"
                )
            try:
                resolve_notebook_path(notebook_task.get("notebook_path"), self.notebooks_root)
            except ValueError as exc:
                raise ValueError(f"{where}.notebook_task: {exc}") from None
            notebook_task["base_parameters"] = _string_map(
                notebook_task.get("base_parameters"), f"{where}.notebook_task.base_parameters"
            )
            _seconds(task.get("timeout_seconds", 0), f"{where}.timeout_seconds")
            if task.get("run_if", "ALL_SUCCESS") != "ALL_SUCCESS":
                raise ValueError(f"{where}.run_if: only ALL_SUCCESS is supported by the local workspace")
        for i, task in enumerate(tasks):
            for dependency in _list(task.get("depends_on"), f"tasks[{i}].depends_on"):
                if not isinstance(dependency, dict) or dependency.get("task_key") not in keys:
                    raise ValueError(f"tasks[{i}].depends_on names an unknown task: {dependency!r}")
        _in_dependency_order(tasks)
        return tasks


def _in_dependency_order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks ordered so that every task comes after the tasks it depends on (stable otherwise)."""
    ordered: list[dict[str, Any]] = []
    done: set[str] = set()
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if all(d["task_key"] in done for d in t.get("depends_on") or [])]
        if not ready:
            raise ValueError(f"depends_on forms a cycle among tasks {[t['task_key'] for t in pending]}")
        for task in ready:
            ordered.append(task)
            done.add(task["task_key"])
            pending.remove(task)
    return ordered


_DIGITS = re.compile(r"^\s*-?\d{1,25}\s*$")


def _int(value: Any, name: str) -> int:
    """An id as JSON gives it (a number, or a string of digits); a 64-bit integer, as on Databricks."""
    integral = isinstance(value, float) and value.is_integer()
    digits = isinstance(value, str) and _DIGITS.match(value)
    number = (
        int(value) if isinstance(value, int) and not isinstance(value, bool) or integral or digits else None
    )
    if number is None or not -(2**63) <= number < 2**63:
        raise ValueError(f"{name} must be a 64-bit integer, got {str(value)[:100]!r}")
    return number


def _list(value: Any, name: str) -> list[Any]:
    """An optional list setting (absent or null: empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list, got {str(value)[:100]!r}")
    return value


def _seconds(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (0 means no timeout), got {value!r}")
    return value


def _queue_enabled(queue: Any, name: str) -> bool:
    if not isinstance(queue, dict) or not isinstance(queue.get("enabled"), bool):
        raise ValueError(f"{name} must be an object like {{'enabled': true}}, got {queue!r}")
    return queue["enabled"]


def _string(value: Any, name: str) -> str:
    """Parameters are strings; numbers and booleans are accepted in their JSON spelling."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"{name} must be a string, got {value!r}")


def _string_map(values: Any, name: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{name} must be an object of strings, got {values!r}")
    return {str(k): _string(v, f"{name}[{k!r}]") for k, v in values.items()}
