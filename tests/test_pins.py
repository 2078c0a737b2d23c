"""One set of library versions: the runtime's (helpers/databricks_runtime.yml), pyproject's pins, the venv."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from helpers.config import PROJECT_ROOT, get_settings

RUNTIME = yaml.safe_load((PROJECT_ROOT / "helpers" / "databricks_runtime.yml").read_text())
PROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
CORE = {Requirement(r).name.lower(): Requirement(r) for r in PROJECT["dependencies"]}
LOCAL = {Requirement(r).name.lower(): Requirement(r) for r in PROJECT["optional-dependencies"]["local"]}
OVER = {name: str(v) for name, v in (RUNTIME.get("installed_over_runtime") or {}).items()}
RUNTIME_VERSIONS = {name: str(v) for name, v in RUNTIME["libraries"].items() if v is not None}
VERIFIED = {**RUNTIME_VERSIONS, **OVER}  # what runs on the cluster: the runtime's, or the wheel's over it
TOUCHED = ["pandas", "numpy", "scikit-learn", "mlflow", "databricks-feature-engineering", "databricks-sdk"]


def test_every_library_the_notebooks_touch_is_listed_for_the_runtime() -> None:
    assert set(TOUCHED) <= set(RUNTIME["libraries"])
    assert all(name in CORE for name in RUNTIME["libraries"]), "runtime libraries are core dependencies"


@pytest.mark.parametrize("name", sorted(VERIFIED))
def test_a_runtime_version_is_pinned_exactly(name: str) -> None:
    assert str(CORE[name].specifier) == f"=={VERIFIED[name]}", f"pin {name}=={VERIFIED[name]} in pyproject"


@pytest.mark.parametrize("name", sorted(RUNTIME["libraries"]))
def test_the_venv_has_the_pinned_version(name: str) -> None:
    installed = version(name)
    assert CORE[name].specifier.contains(installed, prereleases=True), f"{name} {installed} vs {CORE[name]}"
    if name in VERIFIED:
        assert installed == VERIFIED[name], f"{name}: venv {installed}, runtime {VERIFIED[name]}"


@pytest.mark.parametrize("name", sorted(OVER))
def test_a_library_installed_over_the_runtime_is_no_older(name: str) -> None:
    assert Version(OVER[name]) >= Version(RUNTIME_VERSIONS[name])


def test_local_spark_is_the_runtime_s_spark() -> None:
    spark = Version(RUNTIME["spark"])
    assert LOCAL["pyspark"].specifier.contains(str(spark))
    assert Version(version("pyspark")).release[:2] == spark.release[:2]


def test_the_jobs_run_the_target_runtime() -> None:
    found = re.match(r"(\d+)\.(\d+)\.x-cpu-ml-", get_settings().spark_version)
    assert found, get_settings().spark_version
    assert ".".join(found.groups()) == RUNTIME["release"]


def test_the_twin_stays_out_of_the_core_dependencies() -> None:
    twin = {"pyspark", "fastapi", "uvicorn", "uvloop", "httptools", "streamlit", "deltalake", "duckdb"}
    twin |= {"papermill", "jupyter", "ipykernel", "psutil", "nbval"}
    assert not twin & set(CORE), f"twin dependencies in the core: {sorted(twin & set(CORE))}"


def test_the_cluster_requirements_are_what_the_runtime_lacks() -> None:
    """requirements-databricks.txt (a Git folder's cluster library) = the wheel's additions to the runtime."""
    lines = (PROJECT_ROOT / "requirements-databricks.txt").read_text().splitlines()
    wanted = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert {r.name for r in wanted} == set(OVER) | set(RUNTIME["not_in_runtime"])
    for requirement in wanted:
        assert str(requirement) == str(CORE[requirement.name]), (
            f"{requirement} vs pyproject {CORE[requirement.name]}"
        )
