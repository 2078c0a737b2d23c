"""`make check-databricks`: the bundle and notebook 05's SDK job load through Databricks' typed models."""

from __future__ import annotations

import copy
import json
from pathlib import Path, PurePosixPath

import pytest

from helpers import check_databricks, jobs
from helpers.config import get_settings

pytest.importorskip("databricks.bundles")


def _shelf_job() -> dict:
    config = check_databricks.bundle()
    return check_databricks.resolve(
        config["resources"]["jobs"]["shelf_layout_optimization"], check_databricks.variables(config, "dev")
    )


def test_the_repository_passes() -> None:
    assert check_databricks.problems() == []


def test_a_misspelt_field_is_refused_nested_too() -> None:
    job = _shelf_job()
    job["max_concurent_runs"] = 4
    assert any("max_concurent_runs" in p for p in check_databricks._job_problems("x", job))
    job = _shelf_job()
    job["tasks"][0]["notebook_task"]["notebook_pth"] = "x"
    assert any("notebook_pth" in p for p in check_databricks._job_problems("x", job))


VERSIONS = ["15.4.x-cpu-ml-scala2.12", "18.0.x-scala2.13", "16.3.x-cpu-ml-scala2.12"]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_runtime_below_the_online_store_minimum_or_not_ml_is_refused(version: str) -> None:
    job = _shelf_job()
    job["job_clusters"][0]["new_cluster"]["spark_version"] = version
    assert any("spark_version" in p for p in check_databricks._job_problems("x", job))


def test_a_task_without_compute_is_refused() -> None:
    job = _shelf_job()
    del job["job_clusters"]
    del job["tasks"][0]["job_cluster_key"]
    assert any("no compute" in p for p in check_databricks._job_problems("x", job))


def test_the_sdk_job_runs_on_the_bundle_s_compute() -> None:
    bundle_cluster = _shelf_job()["job_clusters"][0]
    assert jobs.job_compute(get_settings()).as_dict() == bundle_cluster
    sdk = check_databricks.sdk_job()
    assert sdk["job_clusters"] == [bundle_cluster]
    assert {t["job_cluster_key"] for t in sdk["tasks"]} == {bundle_cluster["job_cluster_key"]}
    # and the pins the runtime lacks, as the bundle's tasks get them with the helpers wheel
    assert all(t["libraries"] == [{"requirements": jobs.CLUSTER_REQUIREMENTS}] for t in sdk["tasks"])
    other = copy.deepcopy(bundle_cluster)
    other["new_cluster"]["node_type_id"] = "m5.large"
    assert other != jobs.job_compute(get_settings()).as_dict()


def test_a_parameter_read_before_settings_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def cell(source: str, tags: list[str] | None = None) -> dict:
        return {"cell_type": "code", "metadata": {"tags": tags or []}, "source": source, "outputs": []}

    notebook = {
        "cells": [
            cell("n_rows = 10\nseed = 1", ["parameters"]),
            cell("from helpers import platform\nprint(n_rows)"),
            cell("cfg = platform.settings(seed=seed)"),
        ]
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook))
    monkeypatch.setattr(check_databricks, "PROJECT_ROOT", tmp_path)
    assert [p for p in check_databricks.widget_problems(path) if "n_rows" in p]
    notebook["cells"][1], notebook["cells"][2] = notebook["cells"][2], notebook["cells"][1]
    path.write_text(json.dumps(notebook))
    assert list(check_databricks.widget_problems(path)) == []


@pytest.mark.parametrize(
    ("notebook", "root"),
    [
        (
            "/Users/me@x.com/serving-architectures/notebooks/05_async_job_pattern",
            "/Users/me@x.com/serving-architectures",
        ),
        (
            "/Users/me@x.com/.bundle/serving-architectures/dev/files/notebooks/05_x",
            "/Users/me@x.com/.bundle/serving-architectures/dev/files",
        ),
        ("/Users/me@x.com/scratch/05_async_job_pattern", None),
    ],
)
def test_job_notebooks_are_found_next_to_the_running_notebook(notebook: str, root: str | None) -> None:
    """The bundle's jobs import helpers from the wheel: the notebook's own path locates the repository."""
    from helpers.platform import repository_root

    assert repository_root(notebook) == (None if root is None else PurePosixPath(root))


def test_widgets_set_every_plain_parameter_of_the_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a job task's parameters do on Databricks: each widget sets the notebook variable of its name."""
    from helpers import platform

    widgets = {"n_queries": "20", "alias": "challenger", "catalog": "dev", "dry_run": "true"}
    monkeypatch.setattr(
        platform, "_widget_values", lambda names: {n: widgets[n] for n in names if n in widgets}
    )
    namespace = {"n_queries": 200, "alias": "champion", "catalog": None, "dry_run": False, "fe": object()}
    assert platform._apply_widgets(namespace) == widgets
    assert namespace["n_queries"] == 20 and namespace["alias"] == "challenger"
    assert namespace["catalog"] == "dev" and namespace["dry_run"] is True
