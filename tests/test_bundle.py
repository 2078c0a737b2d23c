"""databricks.yml: its jobs run notebooks that exist, with parameters those notebooks declare."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import papermill
import pytest
import yaml

from helpers.config import PROJECT_ROOT, get_settings

BUNDLE = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())
JOBS = BUNDLE["resources"]["jobs"]
TASKS = [(name, task) for name, job in JOBS.items() for task in job["tasks"]]


def _notebook(task: dict[str, Any]) -> Path:
    return (PROJECT_ROOT / task["notebook_task"]["notebook_path"]).resolve()


def test_the_bundle_defines_the_shelf_job_for_dev_and_prod() -> None:
    assert "shelf_layout_optimization" in JOBS
    assert {"dev", "prod"} <= set(BUNDLE["targets"])
    assert [t for t, spec in BUNDLE["targets"].items() if spec.get("default")] == ["dev"]


@pytest.mark.parametrize(("job", "task"), TASKS, ids=[f"{j}.{t['task_key']}" for j, t in TASKS])
def test_tasks_name_notebooks_that_exist_in_the_repository(job: str, task: dict[str, Any]) -> None:
    path = _notebook(task)
    assert path.is_relative_to(PROJECT_ROOT), path
    assert path.suffix == ".ipynb" and path.is_file(), f"{job}: {path} does not exist"
    clusters = {c["job_cluster_key"] for c in JOBS[job].get("job_clusters", [])}
    assert task.get("job_cluster_key") in clusters | {None}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_job_parameters_are_parameters_the_notebook_declares(job: str) -> None:
    declared = {
        name for task in JOBS[job]["tasks"] for name in papermill.inspect_notebook(str(_notebook(task)))
    }
    names = [p["name"] for p in JOBS[job].get("parameters", [])]
    assert len(names) == len(set(names)), "duplicate job parameters"
    assert set(names) <= declared, f"not declared by the notebook: {sorted(set(names) - declared)}"
    assert all(isinstance(p["default"], str) for p in JOBS[job].get("parameters", [])), "must be strings"
    for task in JOBS[job]["tasks"]:
        own = set(papermill.inspect_notebook(str(_notebook(task))))
        extra = set(task["notebook_task"].get("base_parameters", {})) - own
        assert not extra, f"{job}.{task['task_key']}: not declared by its notebook: {sorted(extra)}"


def test_the_shelf_job_writes_under_its_own_run_id() -> None:
    parameters = {p["name"]: p["default"] for p in JOBS["shelf_layout_optimization"]["parameters"]}
    assert parameters["run_id"] == "{{job.run_id}}"
    notebook = papermill.inspect_notebook(str(_notebook(JOBS["shelf_layout_optimization"]["tasks"][0])))
    assert set(parameters) == set(notebook), "every notebook parameter should be a job parameter"


def test_every_variable_used_is_defined() -> None:
    used = set(re.findall(r"\$\{var\.(\w+)\}", (PROJECT_ROOT / "databricks.yml").read_text()))
    included = [yaml.safe_load((PROJECT_ROOT / path).read_text()) for path in BUNDLE["include"]]
    defined = set(BUNDLE.get("variables", {})).union(*(part.get("variables", {}) for part in included))
    assert used <= defined, f"undefined variables: {sorted(used - defined)}"
    for target in BUNDLE["targets"].values():
        assert set(target.get("variables", {})) <= defined


def test_the_project_variables_are_the_notebooks_settings() -> None:
    variables = yaml.safe_load((PROJECT_ROOT / "helpers" / "project.yml").read_text())["variables"]
    settings = get_settings()
    assert BUNDLE["include"] == ["helpers/project.yml"]
    for name, spec in variables.items():
        value = getattr(settings, name)
        assert value == (tuple(spec["default"]) if isinstance(value, tuple) else spec["default"]), name


def test_the_job_cluster_installs_the_helpers_wheel_the_bundle_builds(tmp_path: Path) -> None:
    import shlex
    import subprocess
    import sys
    import zipfile

    artifact = BUNDLE["artifacts"]["helpers_wheel"]
    assert artifact["type"] == "whl"
    for _, task in TASKS:
        assert {"whl": "./dist/*.whl"} in task.get("libraries", []), "the task must install the wheel"
    build = shlex.split(artifact["build"].replace("--wheel-dir dist", f"--wheel-dir {tmp_path}"))
    build[0] = sys.executable  # the same interpreter that runs the tests
    subprocess.run(build, cwd=PROJECT_ROOT, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "helpers/platform.py" in names and "helpers/shelf.py" in names
    assert "helpers/project.yml" in names and "helpers/databricks_runtime.yml" in names
    packaged = zipfile.ZipFile(wheel).read("helpers/project.yml")
    assert packaged == (PROJECT_ROOT / "helpers/project.yml").read_bytes()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [
        line.split(":", 1)[1].strip()
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    core = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in requires}
    assert not core & {"pyspark", "fastapi", "uvicorn", "streamlit", "deltalake", "duckdb", "papermill"}, core


def test_the_dev_target_deploys_the_names_the_notebooks_and_the_app_look_up() -> None:
    """Development mode prefixes job names with "[dev <user>] "; notebook 05 and the app find jobs by name."""
    dev = BUNDLE["targets"]["dev"]
    assert dev.get("mode") != "development" or dev.get("presets", {}).get("name_prefix") == ""
    assert not set(dev.get("variables", {})) & set(vars(get_settings())), "dev must not rename what they use"
    assert JOBS["shelf_layout_optimization"]["name"] == "${var.job_name}"


def test_the_integration_test_runs_every_notebook_in_order_then_teardown() -> None:
    tasks = JOBS["integration_test"]["tasks"]
    numbered = sorted(
        p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "notebooks").glob("[0-9]*.ipynb")
    )
    paths = [task["notebook_task"]["notebook_path"].removeprefix("./") for task in tasks]
    assert paths == [*numbered, "notebooks/teardown.ipynb"]
    for before, task in zip(tasks, tasks[1:], strict=False):
        assert task["depends_on"] == [{"task_key": before["task_key"]}], task["task_key"]
    assert tasks[-1]["run_if"] == "ALL_DONE"
    assert tasks[0]["notebook_task"]["base_parameters"]["n_customers"] == "300"  # smoke size
