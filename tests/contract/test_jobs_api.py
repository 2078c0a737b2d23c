"""databricks-sdk's ``w.jobs`` against the local Jobs API, with real papermill runs of a probe notebook."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import fresh_state
import psutil
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    InvalidParameterValue,
    OperationFailed,
    ResourceDoesNotExist,
    Unauthenticated,
)
from databricks.sdk.service import jobs
from jobs_server import JobsServer, serve_jobs
from polling import process_gone, wait_for

from helpers.local.job_store import JobStore, RunRecord, State
from helpers.local.server import jobs_api
from helpers.local.server.layout import workspace_db

WORKLOAD_FAILED = "Workload failed, see run output for details"  # Databricks' words

WAIT = timedelta(minutes=3)
PROBE = "notebooks/jobs/probe"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsServer]:
    with serve_jobs(fresh_state.seed(tmp_path_factory.mktemp("jobs-state"))) as running:
        yield running


@pytest.fixture(scope="module")
def w(server: JobsServer) -> WorkspaceClient:
    return server.client()


def probe_job(w: WorkspaceClient, name: str, **settings) -> int:
    """A one-task job running the probe notebook; its job parameters are the probe's parameters."""
    base = settings.pop("base_parameters", None)
    parameters = settings.pop(
        "parameters", {"greeting": "hello", "sleep_seconds": "0", "fail_with": "", "marker": ""}
    )
    return w.jobs.create(
        name=name,
        parameters=[jobs.JobParameterDefinition(name=k, default=v) for k, v in parameters.items()],
        tasks=[
            jobs.Task(
                task_key="probe", notebook_task=jobs.NotebookTask(notebook_path=PROBE, base_parameters=base)
            )
        ],
        **settings,
    ).job_id


def test_jobs_are_created_read_listed_and_deleted(w: WorkspaceClient) -> None:
    first = probe_job(w, "listing-a", max_concurrent_runs=3, timeout_seconds=600)
    second = probe_job(w, "listing-b")

    job = w.jobs.get(first)
    assert job.job_id == first and job.created_time > 0
    assert job.settings.name == "listing-a"
    assert job.settings.max_concurrent_runs == 3 and job.settings.timeout_seconds == 600
    assert job.settings.tasks[0].notebook_task.notebook_path == PROBE
    assert {p.name: p.default for p in job.settings.parameters}["greeting"] == "hello"
    assert w.jobs.get(second).settings.max_concurrent_runs == 1  # Databricks' default

    listed = list(w.jobs.list(limit=1))  # one job per page: the SDK follows next_page_token
    assert [j.job_id for j in listed][:2] == [second, first]
    assert not listed[0].settings.tasks  # tasks only with expand_tasks
    expanded = list(w.jobs.list(name="LISTING-A", expand_tasks=True))
    assert [j.job_id for j in expanded] == [first]
    assert expanded[0].settings.tasks[0].task_key == "probe"

    w.jobs.update(
        first, new_settings=jobs.JobSettings(max_concurrent_runs=2), fields_to_remove=["timeout_seconds"]
    )
    updated = w.jobs.get(first).settings
    assert (updated.name, updated.max_concurrent_runs, updated.timeout_seconds) == ("listing-a", 2, 0)
    w.jobs.reset(first, new_settings=jobs.JobSettings(name="listing-a2", tasks=job.settings.tasks))
    assert w.jobs.get(first).settings.name == "listing-a2"
    with pytest.raises(InvalidParameterValue, match="notebook_path"):
        escape = jobs.NotebookTask(notebook_path="../../etc/passwd")
        w.jobs.reset(
            first,
            new_settings=jobs.JobSettings(name="x", tasks=[jobs.Task(task_key="t", notebook_task=escape)]),
        )
    assert w.jobs.get(first).settings.name == "listing-a2", "a refused reset changes nothing"

    w.jobs.delete(first)
    # Databricks answers 400 INVALID_PARAMETER_VALUE "Job <id> does not exist."; the SDK raises it as
    # ResourceDoesNotExist (its error overrides match exactly that answer).
    with pytest.raises(ResourceDoesNotExist, match=f"Job {first} does not exist"):
        w.jobs.get(first)
    assert first not in [j.job_id for j in w.jobs.list()]


def test_jobs_routes_need_the_bearer_token(server: JobsServer) -> None:
    stranger = WorkspaceClient(host=server.url, token="not-the-token", auth_type="pat")
    with pytest.raises(Unauthenticated):
        list(stranger.jobs.list())


@pytest.mark.parametrize(
    "path",
    [
        "/Workspace/Users/someone/notebooks/jobs/probe",
        "../notebooks/jobs/probe",
        "notebooks/../../secrets",
        "",
    ],
)
def test_notebook_paths_outside_the_notebooks_folder_are_refused(w: WorkspaceClient, path: str) -> None:
    task = jobs.Task(task_key="t", notebook_task=jobs.NotebookTask(notebook_path=path))
    with pytest.raises(InvalidParameterValue, match="notebook_path"):
        w.jobs.create(name="escape", tasks=[task])


def test_bad_job_settings_and_run_requests_are_refused(w: WorkspaceClient) -> None:
    python_task = jobs.Task(task_key="t", spark_python_task=jobs.SparkPythonTask(python_file="x.py"))
    with pytest.raises(InvalidParameterValue, match="only notebook_task"):
        w.jobs.create(name="python", tasks=[python_task])
    with pytest.raises(InvalidParameterValue, match="max_concurrent_runs"):
        probe_job(w, "negative", max_concurrent_runs=-1)
    job_id = probe_job(w, "strict")
    with pytest.raises(InvalidParameterValue, match="'nope'"):
        w.jobs.run_now(job_id, job_parameters={"nope": "1"})
    with pytest.raises(InvalidParameterValue, match="notebook_params"):
        w.jobs.run_now(job_id, notebook_params={"greeting": "x"})
    with pytest.raises(ResourceDoesNotExist, match="Run 1 does not exist"):
        w.jobs.get_run(1)
    with pytest.raises(InvalidParameterValue, match="Job 1 does not exist"):
        w.jobs.run_now(1)


def test_run_now_executes_the_notebook_with_substituted_parameters(
    w: WorkspaceClient, server: JobsServer
) -> None:
    base = {
        "greeting": "overridden by the job parameter",
        "task_info": "{{task.name}}:{{task.run_id}}",
        "started": "{{job.start_time.iso_date}}",
        "ids": "job={{job.id}} run={{job.run_id}} ws={{workspace.id}} repairs={{job.repair_count}}",
        "nested": "<{{job.parameters.greeting}}>",
        "literal": "{{job.id} and {{not_a_namespace.x}}",
    }
    job_id = probe_job(w, "echo", base_parameters=base)
    greeting = 'say "hi"\\n\nto run {{job.run_id}}'  # quotes, backslash, newline: data, never code
    waiter = w.jobs.run_now(job_id, job_parameters={"greeting": greeting}, idempotency_token="echo-1")
    run_id = waiter.run_id
    assert w.jobs.run_now(job_id, idempotency_token="echo-1").run_id == run_id  # same token, same run

    run = waiter.result(timeout=WAIT)
    assert run.state.life_cycle_state == jobs.RunLifeCycleState.TERMINATED
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state.state_message
    assert run.status.termination_details.code == jobs.TerminationCodeCode.SUCCESS
    assert run.job_id == job_id and run.number_in_job == run_id and run.run_name == "echo"
    assert run.start_time <= run.end_time and run.run_duration >= 0
    task = run.tasks[0]
    assert task.run_id != run_id and task.state.result_state == jobs.RunResultState.SUCCESS
    assert task.setup_duration > 0 and task.execution_duration >= 0
    resolved = f'say "hi"\\n\nto run {run_id}'
    assert {p.name: p.value for p in run.job_parameters}["greeting"] == resolved

    output = w.jobs.get_run_output(task.run_id)
    echoed = json.loads(output.notebook_output.result)
    assert output.notebook_output.truncated is False and output.error is None
    assert echoed["greeting"] == resolved  # papermill injected it as a variable, unchanged
    parameters = echoed["parameters"]
    assert parameters["greeting"] == resolved  # job parameters override base parameters
    assert parameters["task_info"] == f"probe:{task.run_id}"
    assert parameters["started"] == time.strftime("%Y-%m-%d", time.gmtime(run.start_time / 1000))
    assert parameters["ids"].startswith(f"job={job_id} run={run_id} ws=") and parameters["ids"].endswith(
        "repairs=0"
    )
    assert parameters["nested"] == f"<{resolved}>"
    assert parameters["literal"] == "{{job.id} and {{not_a_namespace.x}}"
    assert echoed["state_dir"] == str(server.state_dir)
    assert Path(echoed["cwd"]) == server.notebooks_root / "jobs"

    executed = Path(urlparse(run.run_page_url).path)
    assert executed.is_relative_to(server.state_dir / "jobs" / "runs" / str(run_id)) and executed.is_file()
    with_values = w.jobs.get_run(run_id, include_resolved_values=True).tasks[0].resolved_values
    assert with_values.notebook_task.base_parameters["task_info"] == f"probe:{task.run_id}"

    assert run_id in [r.run_id for r in w.jobs.list_runs(job_id=job_id, completed_only=True)]
    assert list(w.jobs.list_runs(job_id=job_id, active_only=True)) == []
    with pytest.raises(InvalidParameterValue, match="multiple tasks"):
        w.jobs.get_run_output(run_id)


def test_a_failing_notebook_reports_its_exception_in_the_run_output(w: WorkspaceClient) -> None:
    """As on Databricks: the state says only that the workload failed; get-output carries the exception."""
    job_id = probe_job(w, "failing")
    run = w.jobs.run_now(job_id, job_parameters={"fail_with": "shelf 7 is missing"}).result(timeout=WAIT)
    assert run.state.life_cycle_state == jobs.RunLifeCycleState.TERMINATED
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert run.state.state_message == f"Task {run.tasks[0].task_key} failed with message: {WORKLOAD_FAILED}"
    assert run.tasks[0].state.state_message == WORKLOAD_FAILED
    assert run.status.termination_details.code == jobs.TerminationCodeCode.RUN_EXECUTION_ERROR
    output = w.jobs.get_run_output(run.tasks[0].run_id)
    assert output.error == "ValueError: shelf 7 is missing"
    assert "raise ValueError(fail_with)" in output.error_trace
    assert Path(urlparse(run.tasks[0].run_page_url).path).is_file()  # the executed notebook is kept


def test_an_unknown_reference_fails_the_run_as_an_invalid_configuration(w: WorkspaceClient) -> None:
    job_id = probe_job(w, "typo", base_parameters={"when": "{{job.start_time.iso_dat}}"})
    run = w.jobs.run_now(job_id).result(timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert "{{job.start_time.iso_dat}}" in run.state.state_message
    assert run.status.termination_details.code == jobs.TerminationCodeCode.INVALID_RUN_CONFIGURATION


def test_concurrency_limit_queues_or_skips_and_cancel_stops_the_kernel(
    w: WorkspaceClient, tmp_path: Path
) -> None:
    job_id = probe_job(w, "one-at-a-time", max_concurrent_runs=1, queue=jobs.QueueSettings(enabled=True))
    marker = tmp_path / "kernel.pid"
    first = w.jobs.run_now(job_id, job_parameters={"sleep_seconds": "300", "marker": str(marker)}).run_id
    wait_for(marker.exists, "the first run's notebook to start")
    kernel_pid = int(marker.read_text())

    queued = w.jobs.run_now(job_id, job_parameters={"greeting": "from the queue"})
    state = w.jobs.get_run(queued.run_id)
    assert state.state.life_cycle_state == jobs.RunLifeCycleState.QUEUED
    assert state.status.queue_details.code == jobs.QueueDetailsCodeCode.MAX_CONCURRENT_RUNS_REACHED

    skipped = w.jobs.run_now(job_id, queue=jobs.QueueSettings(enabled=False)).result(timeout=WAIT)
    assert skipped.state.life_cycle_state == jobs.RunLifeCycleState.SKIPPED
    assert skipped.state.result_state == jobs.RunResultState.MAXIMUM_CONCURRENT_RUNS_REACHED
    assert skipped.status.termination_details.code == jobs.TerminationCodeCode.MAX_CONCURRENT_RUNS_EXCEEDED
    active = {r.run_id for r in w.jobs.list_runs(job_id=job_id, active_only=True)}
    assert active == {first, queued.run_id}

    canceled = w.jobs.cancel_run(first).result(timeout=WAIT)
    assert canceled.state.result_state == jobs.RunResultState.CANCELED
    assert canceled.status.termination_details.code == jobs.TerminationCodeCode.USER_CANCELED
    assert process_gone(kernel_pid)

    done = queued.result(timeout=WAIT)  # the queued run starts once the slot is free
    assert done.state.result_state == jobs.RunResultState.SUCCESS, done.state.state_message
    echoed = json.loads(w.jobs.get_run_output(done.tasks[0].run_id).notebook_output.result)
    assert echoed["greeting"] == "from the queue"


def test_a_run_over_its_timeout_is_stopped(w: WorkspaceClient, server: JobsServer) -> None:
    job_id = probe_job(w, "slow", timeout_seconds=2)
    run = w.jobs.run_now(job_id, job_parameters={"sleep_seconds": "300"}).result(timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.TIMEDOUT
    assert run.state.user_cancelled_or_timedout is True
    assert "timeout of 2 seconds" in run.state.state_message
    task = server.jobs.store.get_task_run(run.tasks[0].run_id)
    assert task.pid and process_gone(task.pid)  # the papermill process (and its kernel) were killed


def test_a_restarted_server_closes_runs_a_dead_server_left_running(
    w: WorkspaceClient, server: JobsServer
) -> None:
    job_id = probe_job(w, "orphaned")
    job = server.jobs.get_job(job_id)
    # What a killed server leaves behind: a RUNNING record and a notebook process nobody watches.
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    store = JobStore(workspace_db(server.state_dir))
    record = RunRecord(
        run_id=0,
        job_id=job_id,
        run_name="orphaned",
        settings=job.settings,
        job_parameters=[],
        overriding_parameters={},
        creator_user_name="someone",
        workspace_url=server.url,
        start_time=int(time.time() * 1000),
        state=State("RUNNING"),
    )
    run = store.insert_run(record, job.settings["tasks"])
    started = psutil.Process(orphan.pid).create_time()
    store.update_task(run.tasks[0].run_id, State("RUNNING"), pid=orphan.pid, pid_started=started)
    store.close()

    server.jobs.shutdown()  # what a new server does: a new jobs service on the same store
    server.app.state.jobs = jobs_api.start_jobs(server.state_dir, notebooks_root=server.notebooks_root)

    closed = w.jobs.get_run(run.run_id)
    assert closed.state.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR
    assert closed.state.result_state == jobs.RunResultState.FAILED
    assert "stopped while the run was active" in closed.state.state_message
    assert closed.tasks[0].state.result_state == jobs.RunResultState.FAILED
    orphan.wait(timeout=30)  # killed (it would sleep 600 s); TimeoutExpired here means it was not
    with pytest.raises(OperationFailed, match="stopped while the run was active"):
        w.jobs.wait_get_run_job_terminated_or_skipped(run.run_id)
