"""A job run's overhead beyond its notebook's own work: ``run_now`` to ``SUCCESS``, minus the notebook's work.

The notebook is a job notebook in miniature: it imports the project's API (``from helpers import platform``),
sleeps ``work_seconds`` (its own work, which it measures and returns as its exit value). Each run is
triggered with ``WorkspaceClient.jobs.run_now`` against the local workspace server and watched with
``get_run`` every 20 ms (not the SDK's waiter, whose back-off sleeps add seconds); its overhead is the wall
time from ``run_now`` to the terminal state minus the measured work. Runs start one after another,
``--pause`` seconds apart, as a notebook or an app triggers them (not a burst: a burst of more runs than
processes waiting gets processes started on demand). The same runs are measured twice: with a job process
started ahead of demand (the default) and without (``HELPERS_JOB_WARM_PROCESSES=0``: each run starts its
process, as before).

``python -m benchmarks.job_start`` prints the figures; ``make bench`` adds them to its facts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

WORK_SECONDS = 0.5
POLL_SECONDS = 0.02


@dataclass(frozen=True)
class JobStart:
    overheads: list[float]  # seconds, one per run, in order
    work_seconds: float

    @property
    def median(self) -> float:
        return statistics.median(self.overheads)

    def summary(self) -> str:
        runs = ", ".join(f"{s:.2f}" for s in self.overheads)
        return (
            f"median {self.median:.2f} s over {len(self.overheads)} runs of a notebook whose own work is "
            f"{self.work_seconds:g} s (`run_now` to SUCCESS minus that work; each run: {runs} s)"
        )


def write_notebook(path: Path) -> None:
    """The tiny job notebook: a ``parameters`` cell, then the measured work and the exit value."""
    parameters = nbformat.v4.new_code_cell(
        f'work_seconds = "{WORK_SECONDS}"', metadata={"tags": ["parameters"]}
    )
    work = nbformat.v4.new_code_cell(
        "import json\n"
        "import time\n\n"
        "from helpers import platform\n\n"
        "started = time.perf_counter()\n"
        "time.sleep(float(work_seconds))\n"
        'platform.notebook_exit(json.dumps({"work_seconds": time.perf_counter() - started}))'
    )
    notebook = nbformat.v4.new_notebook(cells=[parameters, work])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def measure(work_dir: Path, runs: int = 10, pause: float = 4.0, warm: int | None = None) -> JobStart:
    """``runs`` runs of the tiny notebook on a server of its own (started and stopped here), with ``warm``
    job processes waiting (``None``: the server's default)."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service import jobs

    from helpers.local.job_process import SIZE_ENV
    from helpers.local.server.jobs_api import NOTEBOOKS_ROOT_ENV
    from helpers.local.server.process import ensure_server, stop_server

    state_dir = work_dir / "job-start-state"
    shutil.rmtree(state_dir, ignore_errors=True)
    notebooks = work_dir / "job-start-notebooks"
    write_notebook(notebooks / "jobs" / "tiny.ipynb")
    environment = {NOTEBOOKS_ROOT_ENV: str(notebooks), "HELPERS_STATE_DIR": str(state_dir), SIZE_ENV: ""}
    if warm is not None:
        environment[SIZE_ENV] = str(warm)
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        info = ensure_server(state_dir)
        w = WorkspaceClient(host=info.url, token=info.token, auth_type="pat")
        task = jobs.Task(task_key="tiny", notebook_task=jobs.NotebookTask(notebook_path="jobs/tiny"))
        job_id = w.jobs.create(name="job start", tasks=[task]).job_id
        overheads, work = [], []
        for _ in range(runs):
            time.sleep(pause)
            started = time.perf_counter()
            run_id = w.jobs.run_now(job_id).run_id
            while (run := w.jobs.get_run(run_id)).state.life_cycle_state.value in (
                "QUEUED",
                "PENDING",
                "RUNNING",
                "TERMINATING",
            ):
                time.sleep(POLL_SECONDS)
            wall = time.perf_counter() - started
            if run.state.result_state is None or run.state.result_state.value != "SUCCESS":
                raise RuntimeError(f"job run {run_id} did not succeed: {run.state.state_message}")
            output = w.jobs.get_run_output(run.tasks[0].run_id).notebook_output.result
            work.append(json.loads(output)["work_seconds"])
            overheads.append(wall - work[-1])
        return JobStart(overheads, statistics.median(work))
    finally:
        stop_server(state_dir)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def facts(work_dir: Path, runs: int = 10, pause: float = 4.0) -> dict[str, str]:
    """The overhead with a process started ahead of demand and without, for the benchmark's facts."""
    ahead = measure(work_dir, runs, pause)
    on_demand = measure(work_dir, runs, pause, warm=0)
    return {
        "job run overhead": ahead.summary(),
        "job run overhead, no process ahead (HELPERS_JOB_WARM_PROCESSES=0)": on_demand.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.job_start", description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--pause", type=float, default=4.0, help="seconds between one run's end and the next")
    args = parser.parse_args(argv)
    for name, value in facts(Path(__file__).resolve().parent / "work", args.runs, args.pause).items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
