"""The local jobs service below HTTP: dynamic values, notebook paths, the store, scheduling, notebook I/O."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from jobs_server import FIXTURE_NOTEBOOKS
from polling import process_gone, wait_for

from helpers.local.dynamic_values import RunContext, UnknownReference, substitute, time_arguments
from helpers.local.job_process import READY, JobProcesses
from helpers.local.job_runner import SERVER_STOPPED, resolve_notebook_path
from helpers.local.job_store import JobStore, RunRecord, State
from helpers.local.jobs import LocalJobs
from helpers.local.notebook_io import EXIT_FILE_ENV, PARAMETERS_FILE_ENV, exit_notebook, job_parameters

START = datetime(2024, 3, 9, 10, 11, 12, 345000, tzinfo=UTC)  # a Saturday
START_MS = int(START.timestamp() * 1000)


def values(**overrides) -> dict[tuple[str, ...], str]:
    context = {
        "job_id": 11,
        "job_name": "shelf layout",
        "run_id": 550315892394120,
        "start_time_ms": START_MS,
        "workspace_id": 42,
        "parameters": {"store_id": "7", "my-param": "dashed"},
        "task_key": "optimize",
        "task_run_id": 99,
        **overrides,
    }
    return RunContext(**context).values()


# Dynamic value references


def test_references_are_replaced_mid_string_and_in_every_namespace() -> None:
    text = "job_{{job.run_id}} of {{job.id}}/{{ job.name }} task {{task.name}}#{{task.run_id}}"
    text += " ws {{workspace.id}}"
    assert substitute(text, values()) == "job_550315892394120 of 11/shelf layout task optimize#99 ws 42"
    assert substitute("{{job.parameters.store_id}}-{{job.parameters.`my-param`}}", values()) == "7-dashed"
    assert substitute("{{job.repair_count}}", values()) == "0"


def test_start_time_arguments_are_utc() -> None:
    assert time_arguments(START_MS) == {
        "iso_datetime": "2024-03-09T10:11:12.345Z",
        "iso_date": "2024-03-09",
        "iso_weekday": "6",
        "is_weekday": "false",
        "timestamp_ms": str(START_MS),
        "year": "2024",
        "month": "3",
        "day": "9",
        "hour": "10",
        "minute": "11",
        "second": "12",
    }
    assert substitute("run_{{job.start_time.iso_date}}", values()) == "run_2024-03-09"


@pytest.mark.parametrize(
    "text",
    [
        "{{job.id}",
        "{job.id}}",
        "{{}}",
        "{{ }}",
        "{{job..id}}",
        "{{job.id + 1}}",
        "{{foo.bar}}",
        "{{secrets}}",
    ],
)
def test_malformed_or_foreign_references_stay_literal(text: str) -> None:
    assert substitute(text, values()) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{job.naem}}", "'job.naem' is not a known reference"),
        ("x{{job.start_time.iso_dat}}", "is not a known reference"),
        ("{{job.parameters.missing}}", "names no job parameter"),
        ("{{task.notebook_url}}", "is not a known reference"),
        ("{{tasks.other.values.rows}}", "not supported by the local job runner"),
        ("{{job.trigger.type}}", "not supported by the local job runner"),
    ],
)
def test_unknown_references_in_known_namespaces_are_errors(text: str, message: str) -> None:
    with pytest.raises(UnknownReference, match=message):
        substitute(text, values(), "base parameter 'when'")


# Notebook paths


@pytest.mark.parametrize(
    "path", ["notebooks/jobs/probe", "notebooks/jobs/probe.ipynb", "jobs/probe", "./notebooks/jobs//probe"]
)
def test_notebook_paths_resolve_inside_the_notebooks_folder(path: str) -> None:
    assert resolve_notebook_path(path, FIXTURE_NOTEBOOKS) == FIXTURE_NOTEBOOKS / "jobs" / "probe.ipynb"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/Workspace/Users/me/notebooks/jobs/probe", "absolute"),
        ("~/notebooks/jobs/probe", "absolute"),
        ("C:/notebooks/jobs/probe", "absolute"),
        ("notebooks/../helpers/config", "'..'"),
        ("notebooks", "names no notebook"),
        ("", "non-empty string"),
        (None, "non-empty string"),
    ],
)
def test_notebook_paths_that_could_escape_are_refused(path: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_notebook_path(path, FIXTURE_NOTEBOOKS)


def test_a_symlink_out_of_the_notebooks_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "notebooks"
    root.mkdir()
    (tmp_path / "elsewhere.ipynb").write_text("{}")
    (root / "sneaky.ipynb").symlink_to(tmp_path / "elsewhere.ipynb")
    with pytest.raises(ValueError, match="outside the notebooks folder"):
        resolve_notebook_path("notebooks/sneaky", root)


# Notebook side: parameters in, exit value out


def test_job_parameters_come_from_the_run_and_take_the_defaults_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert job_parameters(top_k=5) == {"top_k": 5}  # outside a job run: the defaults
    given = tmp_path / "parameters.json"
    given.write_text(json.dumps({"top_k": "7", "ratio": "0.5", "dry_run": "True", "run_id": "123"}))
    monkeypatch.setenv(PARAMETERS_FILE_ENV, str(given))
    assert job_parameters(top_k=5, ratio=1.0, dry_run=False, store="main") == {
        "top_k": 7,
        "ratio": 0.5,
        "dry_run": True,
        "store": "main",
        "run_id": "123",
    }
    with pytest.raises(ValueError, match="'top_k' must be a bool"):
        job_parameters(top_k=True)


def test_exit_notebook_records_a_string_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exit_notebook("nowhere to go")  # outside a job run: nothing happens
    target = tmp_path / "exit"
    monkeypatch.setenv(EXIT_FILE_ENV, str(target))
    exit_notebook('{"rows": 3}')
    assert target.read_text() == '{"rows": 3}'
    with pytest.raises(TypeError, match="must be a str"):
        exit_notebook({"rows": 3})  # type: ignore[arg-type]


# Store


def test_ids_are_large_increasing_and_survive_a_reopen(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "workspace.db")
    first = store.insert_job({"name": "a", "tasks": []}, "me", 1)
    second = store.insert_job({"name": "b", "tasks": []}, "me", 2)
    assert first.job_id >= 10**14 and second.job_id == first.job_id + 1
    store.close()
    reopened = JobStore(tmp_path / "workspace.db")
    assert reopened.get_job(second.job_id) == second
    assert reopened.insert_job({"name": "c", "tasks": []}, "me", 3).job_id == second.job_id + 1
    reopened.close()
    mode = sqlite3.connect(tmp_path / "workspace.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


# The service, without running a kernel


@pytest.fixture
def local_jobs(state_dir: Path, tmp_path: Path) -> Iterator[LocalJobs]:
    # Not the HELPERS_STATE_DIR of this process: job notebooks must get the service's own state dir.
    service = LocalJobs(tmp_path / "server-state", notebooks_root=FIXTURE_NOTEBOOKS, max_workers=1)
    yield service
    service.shutdown()


def notebook_task(key: str, path: str = "notebooks/jobs/probe", **extra) -> dict:
    return {"task_key": key, "notebook_task": {"notebook_path": path}, **extra}


def wait_until_done(service: LocalJobs, run_id: int) -> RunRecord:
    deadline = time.monotonic() + 120
    while (run := service.get_run(run_id)).state.active:
        assert time.monotonic() < deadline, f"run {run_id} still {run.state.life_cycle_state}"
        time.sleep(0.05)
    return run


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tasks": []}, "tasks must be a non-empty list"),
        ({"tasks": [notebook_task("a"), notebook_task("a")]}, "used twice"),
        ({"tasks": [notebook_task("a", depends_on=[{"task_key": "b"}])]}, "unknown task"),
        (
            {
                "tasks": [
                    notebook_task("a", depends_on=[{"task_key": "b"}]),
                    notebook_task("b", depends_on=[{"task_key": "a"}]),
                ]
            },
            "cycle",
        ),
        ({"tasks": [notebook_task("a", run_if="ALL_DONE")]}, "run_if"),
        ({"tasks": [notebook_task("a")], "schedule": {"quartz_cron_expression": "0 0 * * * ?"}}, "schedule"),
        ({"tasks": [notebook_task("a")], "timeout_seconds": -5}, "timeout_seconds"),
        ({"tasks": [notebook_task("a")], "queue": {"enabled": "yes"}}, "queue"),
        ({"tasks": [notebook_task("a")], "parameters": [{"name": "x"}]}, "needs a default"),
        ({"tasks": [notebook_task("a")], "parameters": [{"name": "x", "default": "1"}] * 2}, "duplicate"),
        (
            {
                "tasks": [
                    {
                        "task_key": "a",
                        "notebook_task": {"notebook_path": "jobs/probe", "base_parameters": {"x": [1]}},
                    }
                ]
            },
            r"base_parameters\['x'\]",
        ),
    ],
)
def test_invalid_job_settings_are_refused(local_jobs: LocalJobs, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        local_jobs.create_job(settings)


def test_a_failed_task_skips_its_dependents(local_jobs: LocalJobs) -> None:
    job = local_jobs.create_job(
        {
            "name": "two steps",
            "tasks": [
                notebook_task("publish", depends_on=[{"task_key": "score"}]),
                notebook_task("score", path="notebooks/jobs/not_written_yet"),
            ],
        }
    )
    run = wait_until_done(local_jobs, local_jobs.run_now(job.job_id).run_id)
    score, publish = run.tasks  # dependency order
    assert (score.task_key, publish.task_key) == ("score", "publish")
    assert score.state.result_state == "FAILED" and score.state.termination_code == "RESOURCE_NOT_FOUND"
    assert publish.state.life_cycle_state == "SKIPPED" and publish.state.result_state == "UPSTREAM_FAILED"
    assert run.state.result_state == "FAILED"
    assert run.state.state_message.startswith("Task score failed with message: Unable to access the notebook")


def test_queued_runs_can_be_canceled_and_a_limit_of_zero_skips(local_jobs: LocalJobs) -> None:
    job = local_jobs.create_job({"name": "busy", "tasks": [notebook_task("a")], "queue": {"enabled": True}})
    # Occupy the job's only slot with a run record, as if a notebook were executing.
    busy = local_jobs.store.insert_run(
        RunRecord(
            run_id=0,
            job_id=job.job_id,
            run_name="busy",
            settings=job.settings,
            job_parameters=[],
            overriding_parameters={},
            creator_user_name="me",
            workspace_url="",
            start_time=1,
            state=State("RUNNING"),
        ),
        job.settings["tasks"],
    )
    queued = local_jobs.run_now(job.job_id)
    assert queued.state.life_cycle_state == "QUEUED"
    local_jobs.cancel_run(queued.tasks[0].run_id)  # a task run id cancels its job run
    canceled = local_jobs.get_run(queued.run_id)
    assert canceled.state.result_state == "CANCELED" and canceled.end_time > 0
    local_jobs.cancel_run(queued.run_id)  # canceling a finished run changes nothing
    assert local_jobs.get_run(queued.run_id) == canceled

    never = local_jobs.create_job(
        {"name": "off", "tasks": [notebook_task("a")], "max_concurrent_runs": 0, "queue": {"enabled": True}}
    )
    assert local_jobs.run_now(never.job_id).state.result_state == "MAXIMUM_CONCURRENT_RUNS_REACHED"

    local_jobs.shutdown()  # the service stops with a run still active: it is closed, durably
    store = JobStore(local_jobs.state_dir / "workspace.db")
    closed = store.get_run(busy.run_id)
    assert closed.state == State.internal_error(SERVER_STOPPED)
    assert closed.tasks[0].state.life_cycle_state == "INTERNAL_ERROR"
    store.close()


def test_legacy_notebook_params_and_non_identifier_names_reach_the_notebook(local_jobs: LocalJobs) -> None:
    base = {"greeting": "base", "shelf-count": "3"}
    task = {"task_key": "probe", "notebook_task": {"notebook_path": "jobs/probe", "base_parameters": base}}
    job = local_jobs.create_job({"name": "legacy", "tasks": [task]})
    run = local_jobs.run_now(job.job_id, notebook_params={"greeting": "legacy"})
    assert run.overriding_parameters == {"notebook_params": {"greeting": "legacy"}}
    done = wait_until_done(local_jobs, run.run_id)
    assert done.state.result_state == "SUCCESS", done.state.state_message
    task, _ = local_jobs.get_output(done.tasks[0].run_id)
    echoed = json.loads(task.exit_value)
    assert echoed["greeting"] == "legacy"  # notebook_params override base_parameters
    # "shelf-count" cannot be a Python variable, but job_parameters() still has it
    assert echoed["parameters"] == {"greeting": "legacy", "shelf-count": "3"}
    assert echoed["state_dir"] == str(local_jobs.state_dir)


# Job processes started ahead of demand


def test_a_run_takes_the_process_started_ahead_in_its_own_directory_and_environment(
    local_jobs: LocalJobs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROBE_GONE", "set when the process started")
    monkeypatch.setenv("PROBE_CHANGED", "before")
    job = local_jobs.create_job({"name": "ahead", "tasks": [notebook_task("probe")]})
    [ahead] = local_jobs.executor.processes.waiting  # started with the job, before any run
    monkeypatch.delenv("PROBE_GONE")
    monkeypatch.setenv("PROBE_CHANGED", "after")
    monkeypatch.setenv("PROBE_NEW", "new")
    exited = tmp_path / "exited"

    run_id = local_jobs.run_now(job.job_id, notebook_params={"at_exit": str(exited)}).run_id
    run = wait_until_done(local_jobs, run_id)

    assert run.state.result_state == "SUCCESS", run.state.state_message
    [task] = run.tasks
    assert task.pid == ahead.process.pid
    echoed = json.loads(local_jobs.get_output(task.run_id)[0].exit_value)
    assert echoed["parent_pid"] == ahead.process.pid  # the notebook ran in the kernel it had started
    assert echoed["environment"] == {
        "PROBE_CHANGED": "after",
        "PROBE_NEW": "new",
    }  # the run's, not the start's
    assert echoed["cwd"] == str(FIXTURE_NOTEBOOKS / "jobs")
    executed = json.loads(Path(task.output_path).read_text())
    assert [c["execution_count"] for c in executed["cells"] if c["cell_type"] == "code"] == [1, 2, 3]
    [replacement] = local_jobs.executor.processes.waiting  # one process per run: the next one waits
    assert replacement.process.pid != ahead.process.pid
    wait_for(exited.exists, "the kernel to shut down gracefully, running its atexit handlers")
    wait_for(lambda: process_gone(ahead.process.pid), "the run's process to end")


def test_a_kernel_that_died_while_waiting_is_replaced_and_shutdown_ends_the_waiting_processes(
    local_jobs: LocalJobs, tmp_path: Path
) -> None:
    job = local_jobs.create_job({"name": "ahead", "tasks": [notebook_task("probe")]})
    [ahead] = local_jobs.executor.processes.waiting
    wait_for(lambda: READY in ahead.log.read_text(errors="replace"), "the waiting process to be ready")
    [kernel] = psutil.Process(ahead.process.pid).children()
    kernel.kill()
    wait_for(lambda: process_gone(kernel.pid), "the waiting kernel to die")
    marker = tmp_path / "kernel.pid"

    run = wait_until_done(
        local_jobs, local_jobs.run_now(job.job_id, notebook_params={"marker": str(marker)}).run_id
    )

    assert run.state.result_state == "SUCCESS", run.state.state_message
    assert run.tasks[0].pid == ahead.process.pid and int(marker.read_text()) != kernel.pid
    [waiting] = local_jobs.executor.processes.waiting
    wait_for(lambda: READY in waiting.log.read_text(errors="replace"), "the next process to be ready")
    tree = [
        waiting.process.pid,
        *(p.pid for p in psutil.Process(waiting.process.pid).children(recursive=True)),
    ]
    local_jobs.shutdown()
    assert len(tree) == 2 and all(process_gone(pid) for pid in tree)  # the process and its kernel


def test_a_waiting_process_whose_server_is_gone_ends_with_its_kernel(tmp_path: Path) -> None:
    """A killed server cannot kill its waiting processes: its end of their stdin closes, and they end."""
    processes = JobProcesses(tmp_path / "processes", lambda: dict(os.environ), size=1)
    processes.fill()
    [waiting] = processes.waiting
    wait_for(lambda: READY in waiting.log.read_text(errors="replace"), "the waiting process to be ready")
    [kernel] = psutil.Process(waiting.process.pid).children()
    assert waiting.process.stdin is not None
    waiting.process.stdin.close()  # what the server's death does to the pipe

    assert waiting.process.wait(timeout=120) == 0
    wait_for(lambda: process_gone(kernel.pid), "the kernel to end with its process")
