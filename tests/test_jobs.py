"""helpers.jobs against the local Jobs API, with real papermill runs of the probe notebook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import fresh_state
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import NotebookTask, RunLifeCycleState, RunResultState, Task
from jobs_server import JobsServer, serve_jobs

from helpers import jobs, platform
from helpers.config import Settings

PROBE = "notebooks/jobs/probe"
PARAMETERS = {"greeting": "hello", "sleep_seconds": "0", "fail_with": "", "marker": ""}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsServer]:
    with serve_jobs(fresh_state.seed(tmp_path_factory.mktemp("jobs-helper-state"))) as running:
        yield running


@pytest.fixture(scope="module")
def w(server: JobsServer) -> WorkspaceClient:
    return server.client()


@pytest.fixture(scope="module")
def job_id(w: WorkspaceClient) -> int:
    return jobs.create_or_update_job(w, "probe-helpers", PROBE, PARAMETERS, max_concurrent_runs=5)


def test_a_job_is_created_once_and_found_again(w: WorkspaceClient, job_id: int) -> None:
    assert jobs.create_or_update_job(w, "probe-helpers", PROBE, PARAMETERS, max_concurrent_runs=5) == job_id
    job = w.jobs.get(job_id)
    assert job.settings.tasks[0].notebook_task.notebook_path == PROBE
    assert {p.name: p.default for p in job.settings.parameters} == PARAMETERS
    assert job.settings.max_concurrent_runs == 5 and job.settings.queue.enabled
    assert [j.job_id for j in w.jobs.list(name="probe-helpers")] == [job_id]


def test_changed_settings_reset_the_job_in_place(w: WorkspaceClient) -> None:
    first = jobs.create_or_update_job(w, "probe-reset", PROBE, PARAMETERS)
    again = jobs.create_or_update_job(w, "probe-reset", PROBE, {**PARAMETERS, "greeting": "hi"})
    assert again == first
    assert {p.name: p.default for p in w.jobs.get(first).settings.parameters}["greeting"] == "hi"


def test_two_jobs_with_the_name_are_refused(w: WorkspaceClient) -> None:
    for _ in range(2):
        w.jobs.create(
            name="probe-twice", tasks=[Task(task_key="t", notebook_task=NotebookTask(notebook_path=PROBE))]
        )
    with pytest.raises(ValueError, match="2 jobs are named 'probe-twice'"):
        jobs.create_or_update_job(w, "probe-twice", PROBE, PARAMETERS)


def test_a_successful_run_is_awaited_and_its_output_read(w: WorkspaceClient, job_id: int) -> None:
    run_id = w.jobs.run_now(job_id, job_parameters={"greeting": "bonjour"}).run_id
    run = jobs.wait_for_run(w, run_id, timeout=timedelta(minutes=3))
    assert run.state.life_cycle_state == RunLifeCycleState.TERMINATED and jobs.succeeded(run)
    assert jobs.run_error(w, run) is None
    assert json.loads(jobs.run_output(w, run))["greeting"] == "bonjour"
    timings = jobs.run_timings(run)
    assert timings["run total"] > 0 and timings["notebook execution"] >= 0
    assert timings["run total"] >= timings["setup (compute + kernel start)"]


def test_several_runs_are_awaited_together_and_a_failure_explains_itself(
    w: WorkspaceClient, job_id: int
) -> None:
    good = w.jobs.run_now(job_id).run_id
    bad = w.jobs.run_now(job_id, job_parameters={"fail_with": "shelf_length_cm must be positive"}).run_id
    runs = jobs.wait_for_runs(w, [bad, good], timeout=timedelta(minutes=3), progress=False)
    assert [r.run_id for r in runs] == [bad, good]
    assert runs[0].state.result_state == RunResultState.FAILED and jobs.succeeded(runs[1])
    error = jobs.run_error(w, runs[0])
    assert "ValueError: shelf_length_cm must be positive" in error


def test_waiting_is_bounded(w: WorkspaceClient, job_id: int) -> None:
    run_id = w.jobs.run_now(job_id, job_parameters={"sleep_seconds": "60"}).run_id
    try:
        with pytest.raises(TimeoutError, match=f"{run_id}.*still active after 0:00:01"):
            jobs.wait_for_run(w, run_id, timeout=timedelta(seconds=1))
    finally:
        w.jobs.cancel_run(run_id)
    with pytest.raises(ValueError, match="timeout must be positive"):
        jobs.wait_for_runs(w, [run_id], timeout=timedelta(0))


def test_job_notebook_paths_per_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "_current", Settings(backend="local"))
    assert jobs.job_notebook_path("shelf_layout_optimization") == "notebooks/jobs/shelf_layout_optimization"
    monkeypatch.setattr(platform, "_current", Settings(backend="databricks"))
    monkeypatch.setattr(
        platform, "PROJECT_ROOT", Path("/Workspace/Users/ana@example.com/serving-architectures")
    )
    assert (
        jobs.job_notebook_path("shelf_layout_optimization")
        == "/Users/ana@example.com/serving-architectures/notebooks/jobs/shelf_layout_optimization"
    )
    with pytest.raises(ValueError, match="job notebook name"):
        jobs.job_notebook_path("../secrets")
    with pytest.raises(ValueError, match="repository path"):
        platform.notebook_task_path("/etc/passwd")
