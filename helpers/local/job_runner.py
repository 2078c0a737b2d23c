"""Executes one job run: its notebook tasks in order, each with papermill in a process tree of its own.

Per task: dynamic value references are resolved, job parameters override the task's ``base_parameters``,
and a job process (:mod:`helpers.local.job_process`: papermill with its kernel already started, taken from
the executor's :class:`JobProcesses` and replaced at once) executes the notebook in a new session, so a
cancel or a timeout kills the process, the kernel and whatever the notebook started. The executed notebook,
its log, parameters and exit value stay in ``<state_dir>/jobs/runs/<job run id>/``.
"""

from __future__ import annotations

import json
import keyword
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from helpers.config import PROJECT_ROOT
from helpers.local.dynamic_values import RunContext, UnknownReference, substitute, substitute_all
from helpers.local.job_process import KERNEL_DIED, JobProcesses, kill_tree
from helpers.local.job_store import JobStore, RunRecord, State, TaskRunRecord
from helpers.local.notebook_io import EXIT_FILE_ENV, PARAMETERS_FILE_ENV

log = logging.getLogger(__name__)

SERVER_STOPPED = (
    "The local workspace server stopped while the run was active; the run was closed by the workspace server."
)
# Databricks' state message for a task whose notebook raised; the error itself is in runs/get-output.
WORKLOAD_FAILED = "Workload failed, see run output for details"
OUTPUT_LIMIT = 5 * 1024 * 1024  # Databricks returns the first 5 MB of a notebook's exit value
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunControl:
    """How the scheduler talks to a run in progress: ``stop`` with a reason (``cancel`` or ``shutdown``)."""

    started: bool = False
    reason: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def request_stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.stop.set()


@dataclass(frozen=True)
class NotebookResult:
    state: State
    setup_duration: int = 0
    execution_duration: int = 0
    cleanup_duration: int = 0
    exit_value: str | None = None
    error: str | None = None
    error_trace: str | None = None


def resolve_notebook_path(notebook_path: Any, notebooks_root: Path) -> Path:
    """The ``.ipynb`` file a task's ``notebook_path`` names, inside ``notebooks_root``.

    Accepted: repo-style ``notebooks/jobs/<name>`` or ``jobs/<name>`` (relative to the notebooks folder),
    with or without ``.ipynb``. Rejected (ValueError): absolute paths, ``..``, anything outside the folder.
    """
    if not isinstance(notebook_path, str) or not notebook_path.strip():
        raise ValueError(f"notebook_path must be a non-empty string, got {notebook_path!r}")
    parts = notebook_path.replace("\\", "/").split("/")
    if notebook_path.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", notebook_path):
        raise ValueError(
            f"notebook_path {notebook_path!r} is absolute; locally it must be relative to the project, "
            f"like '{notebooks_root.name}/jobs/<notebook>'"
        )
    if ".." in parts:
        raise ValueError(f"notebook_path {notebook_path!r} must not contain '..'")
    parts = [p for p in parts if p not in ("", ".")]
    if parts and parts[0] == notebooks_root.name:
        parts = parts[1:]
    if not parts:
        raise ValueError(f"notebook_path {notebook_path!r} names no notebook")
    root = notebooks_root.resolve()
    candidate = root.joinpath(*parts)
    if candidate.suffix != ".ipynb":
        candidate = candidate.with_name(candidate.name + ".ipynb")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"notebook_path {notebook_path!r} resolves outside the notebooks folder")
    return resolved


class JobRunExecutor:
    """Runs the tasks of a job run and records every state change in the store."""

    def __init__(
        self,
        store: JobStore,
        state_dir: Path,
        notebooks_root: Path,
        python: str = sys.executable,
        kernel_name: str = "python3",
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.notebooks_root = notebooks_root
        self.processes = JobProcesses(
            state_dir / "jobs" / "processes", self.environment, python=python, kernel_name=kernel_name
        )

    def run_dir(self, run_id: int) -> Path:
        return self.state_dir / "jobs" / "runs" / str(run_id)

    def environment(self) -> dict[str, str]:
        """The environment of a job process: the server's, naming its state dir; this checkout first."""
        return {
            **os.environ,
            "HELPERS_STATE_DIR": str(self.state_dir),
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1",
        }

    def close(self) -> None:
        """Stop the job processes waiting for runs (call once no run executes any more)."""
        self.processes.close()

    def execute(self, run: RunRecord, control: RunControl) -> None:
        started = now_ms()
        self.store.update_run(run.run_id, State("RUNNING"), queue_duration=started - run.start_time)
        timeout = int(run.settings.get("timeout_seconds") or 0)
        deadline = (time.monotonic() + timeout, timeout) if timeout else None
        context = RunContext(
            job_id=run.job_id,
            job_name=str(run.settings.get("name", "")),
            run_id=run.run_id,
            start_time_ms=run.start_time,
            workspace_id=self.store.workspace_id,
            workspace_url=run.workspace_url,
        )
        try:
            parameters = self._resolve_job_parameters(run, context)
        except UnknownReference as exc:
            state = State.failed(str(exc), "INVALID_RUN_CONFIGURATION")
            for task in run.tasks:
                self.store.update_task(task.run_id, state, start_time=started, end_time=now_ms())
            self.store.update_run(run.run_id, state, end_time=now_ms())
            return
        context = replace(context, parameters=parameters)
        results: dict[str, State] = {}
        for task in run.tasks:
            results[task.task_key] = self._execute_task(run, task, context, results, control, deadline)
        self.store.update_run(run.run_id, _overall(run.tasks, results, control), end_time=now_ms())

    def _resolve_job_parameters(self, run: RunRecord, context: RunContext) -> dict[str, str]:
        values = context.values()
        resolved = {}
        for parameter in run.job_parameters:
            where = f"job parameter {parameter['name']!r}"
            resolved[parameter["name"]] = substitute(parameter["value"], values, where)
        self.store.update_run(
            run.run_id, job_parameters=[{**p, "value": resolved[p["name"]]} for p in run.job_parameters]
        )
        return resolved

    def _execute_task(
        self,
        run: RunRecord,
        task: TaskRunRecord,
        context: RunContext,
        results: dict[str, State],
        control: RunControl,
        deadline: tuple[float, int] | None,
    ) -> State:
        skipped = _skip_reason(task, results, control)
        if skipped is not None:
            self.store.update_task(task.run_id, skipped)
            return skipped
        start = now_ms()
        self.store.update_task(task.run_id, State("RUNNING"), start_time=start)
        notebook_task = task.task["notebook_task"]
        finished = {key: {"result_state": state.result_state or ""} for key, state in results.items()}
        values = replace(
            context,
            task_key=task.task_key,
            task_run_id=task.run_id,
            notebook_path=notebook_task["notebook_path"],
            tasks={t.task_key: {"run_id": str(t.run_id), **finished.get(t.task_key, {})} for t in run.tasks},
        ).values()
        try:
            base = substitute_all(notebook_task.get("base_parameters") or {}, values, "base parameter")
            notebook = resolve_notebook_path(notebook_task["notebook_path"], self.notebooks_root)
        except (UnknownReference, ValueError) as exc:
            return self._finish_task(
                task, NotebookResult(State.failed(str(exc), "INVALID_RUN_CONFIGURATION"))
            )
        if not notebook.is_file():
            path = notebook_task["notebook_path"]
            message = f"Unable to access the notebook {path!r}: {notebook} does not exist."
            return self._finish_task(task, NotebookResult(State.failed(message, "RESOURCE_NOT_FOUND")))
        legacy = run.overriding_parameters.get("notebook_params") or {}
        parameters = {**base, **legacy, **context.parameters}
        task_timeout = int(task.task.get("timeout_seconds") or 0)
        deadlines = [d for d in (deadline, (time.monotonic() + task_timeout, task_timeout)) if d and d[1]]
        output = self.run_dir(run.run_id) / f"{task.task_key}.ipynb"
        self.store.update_task(task.run_id, parameters=parameters, output_path=str(output))

        def remember(pid: int, created: float) -> None:
            self.store.update_task(task.run_id, pid=pid, pid_started=created)

        result = run_notebook(
            notebook,
            output,
            parameters,
            self.processes,
            min(deadlines) if deadlines else None,
            control,
            remember,
        )
        return self._finish_task(task, result)

    def _finish_task(self, task: TaskRunRecord, result: NotebookResult) -> State:
        self.store.update_task(
            task.run_id,
            result.state,
            end_time=now_ms(),
            setup_duration=result.setup_duration,
            execution_duration=result.execution_duration,
            cleanup_duration=result.cleanup_duration,
            exit_value=result.exit_value,
            error=result.error,
            error_trace=result.error_trace,
        )
        return result.state


def _skip_reason(task: TaskRunRecord, results: dict[str, State], control: RunControl) -> State | None:
    if control.stop.is_set():
        return State.upstream("UPSTREAM_CANCELED", "The run stopped before this task started.")
    for upstream in task.task.get("depends_on") or []:
        state = results[upstream["task_key"]]
        if state.result_state != "SUCCESS":
            kind = (
                "UPSTREAM_CANCELED" if state.result_state in ("CANCELED", "TIMEDOUT") else "UPSTREAM_FAILED"
            )
            return State.upstream(kind, f"Upstream task {upstream['task_key']!r} did not succeed.")
    return None


def _overall(tasks: Iterable[TaskRunRecord], results: dict[str, State], control: RunControl) -> State:
    """The job run's result from its tasks' results: the first task that did not succeed decides."""
    for task in tasks:
        state = results[task.task_key]
        if state.result_state == "UPSTREAM_CANCELED" and control.reason is not None:
            return _stopped(control.reason)
        if state.life_cycle_state == "SKIPPED":
            continue
        if state.result_state == "FAILED":
            message = f"Task {task.task_key} failed with message: {state.state_message}"
            return State.failed(message, state.termination_code or "RUN_EXECUTION_ERROR")
        if state.result_state != "SUCCESS":
            return state
    return State.success()


def run_notebook(
    notebook: Path,
    output: Path,
    parameters: dict[str, str],
    processes: JobProcesses,
    deadline: tuple[float, int] | None,
    control: RunControl,
    on_start: Callable[[int, float], None],
) -> NotebookResult:
    """Execute ``notebook`` into ``output`` in a job process; stop it on ``control.stop`` or ``deadline``.

    ``deadline`` is ``(time.monotonic() value, configured seconds)``; ``on_start(pid, create_time)`` is
    called once the process has the run, so a restarted server can find and kill an orphan.
    """
    run_dir = output.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    stem = output.stem
    exit_file = run_dir / f"{stem}.exit"
    done_file = run_dir / f"{stem}.done"
    parameters_file = run_dir / f"{stem}.parameters.json"
    spec_file = run_dir / f"{stem}.spec.json"
    exit_file.unlink(missing_ok=True)
    done_file.unlink(missing_ok=True)
    parameters_file.write_text(json.dumps(parameters, indent=1))
    environment = {
        **processes.environment(),
        EXIT_FILE_ENV: str(exit_file),
        PARAMETERS_FILE_ENV: str(parameters_file),
        "JUPYTER_RUNTIME_DIR": str(run_dir / "runtime"),
    }
    spec = {
        "input": str(notebook),
        "output": str(output),
        # Only names that are Python identifiers can become variables; every name is in parameters_file.
        "parameters": {k: v for k, v in parameters.items() if k.isidentifier() and not keyword.iskeyword(k)},
        "cwd": str(notebook.parent),
        "kernel_name": processes.kernel_name,
        "done": str(done_file),
    }
    spec_file.write_text(json.dumps(spec, indent=1))  # for the record; the environment stays off the disk
    job_process = processes.take()
    process = job_process.process
    started = time.time()
    job_process.start({**spec, "environment": environment}, run_dir / f"{stem}.log")
    with suppress(psutil.NoSuchProcess):
        on_start(process.pid, psutil.Process(process.pid).create_time())
    processes.fill()  # the next run's process starts while this one runs
    stopped, code = _wait(process, done_file, deadline, control)
    ended = time.time()
    if code is not None and process.poll() is None:
        processes.finishing(process)  # it shuts its kernel down; the run is over
    setup, execution, cleanup = _durations(output, started, ended)
    exit_value = _read_limited(exit_file)
    if stopped == "timeout" and deadline is not None:
        state = State.timed_out(deadline[1])
    elif stopped is not None:
        state = _stopped(stopped)
    elif code == 0:
        return NotebookResult(State.success(), setup, execution, cleanup, exit_value)
    else:
        error, trace = _notebook_error(output, run_dir / f"{stem}.log")
        state = State.failed(WORKLOAD_FAILED)  # the exception goes to runs/get-output, as on Databricks
        return NotebookResult(state, setup, execution, cleanup, exit_value, error, trace)
    return NotebookResult(state, setup, execution, cleanup, exit_value, state.state_message)


def _stopped(reason: str) -> State:
    return State.internal_error(SERVER_STOPPED) if reason == "shutdown" else State.canceled()


def _wait(
    process: subprocess.Popen[bytes],
    done_file: Path,
    deadline: tuple[float, int] | None,
    control: RunControl,
) -> tuple[str | None, int | None]:
    """``(why it stopped, None)`` or ``(None, exit code)``: the done file's code, else the process's."""
    while True:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.02)
        if done_file.exists():
            return None, int(done_file.read_text())
        if process.returncode is not None:
            return None, process.returncode
        reason = control.reason if control.stop.is_set() else None
        if reason is None and deadline is not None and time.monotonic() >= deadline[0]:
            reason = "timeout"
        if reason is not None:
            kill_tree(process.pid)
            process.wait()
            return reason, None


def _durations(output: Path, spawned: float, ended: float) -> tuple[int, int, int]:
    """(setup, execution, cleanup) in ms from papermill's per-cell timestamps."""
    cells = _load_notebook(output).get("cells", [])
    starts, ends = [], []
    for cell in cells:
        meta = cell.get("metadata", {}).get("papermill", {})
        if meta.get("start_time"):
            starts.append(datetime.fromisoformat(meta["start_time"]).timestamp())
        if meta.get("end_time"):
            ends.append(datetime.fromisoformat(meta["end_time"]).timestamp())
    if not starts:
        return round((ended - spawned) * 1000), 0, 0
    first, last = min(starts), max(ends or starts)
    return (
        max(0, round((first - spawned) * 1000)),
        max(0, round((last - first) * 1000)),
        max(0, round((ended - last) * 1000)),
    )


def _notebook_error(output: Path, log_path: Path) -> tuple[str, str]:
    """``("ValueError: message", traceback)`` from the failed cell, else the tail of the child's log."""
    for cell in _load_notebook(output).get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                trace = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                return f"{out.get('ename')}: {out.get('evalue')}", trace
    tail = log_path.read_text(errors="replace").strip().splitlines()[-20:] if log_path.exists() else []
    last = tail[-1] if tail else "the notebook process exited without output"
    return (last if last == KERNEL_DIED else f"Notebook execution failed: {last}"), "\n".join(tail)


def _load_notebook(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_limited(path: Path) -> str | None:
    if not path.exists():
        return None
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read(OUTPUT_LIMIT + 1)
