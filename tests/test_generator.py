"""The project generator (copier.yml): a new project with its own names and data runs its smoke subset."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from sample_data import LOAN_MAPPING, loan_applications

from helpers.config import PROJECT_ROOT

copier = pytest.importorskip("copier")
pytestmark = pytest.mark.long  # generates a project and runs its notebooks

ANSWERS = {
    "project_name": "credit-risk",
    "job_name": "credit_limits_optimization",
    "job_endpoint": "credit-limits",
    "source": "data/applications.csv",
    **{k: v for k, v in LOAN_MAPPING.items()},
}


def _generate(destination: Path, answers: dict[str, str]) -> Path:
    copier.run_copy(
        str(PROJECT_ROOT), destination, data=answers, defaults=True, quiet=True, vcs_ref="HEAD", unsafe=False
    )
    return destination


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _generate(tmp_path_factory.mktemp("generated") / "credit-risk", ANSWERS)
    (project / "data").mkdir()
    loan_applications(800).to_csv(project / "data" / "applications.csv", index=False)
    return project


def test_the_default_answers_give_this_repository_s_project_file(tmp_path: Path) -> None:
    demo = {
        "project_name": "serving-architectures",
        "schema": "serving_demo",
        "online_store_name": "serving-demo-store",
    }
    project = _generate(tmp_path / "demo", demo)
    assert yaml.safe_load((project / "helpers" / "project.yml").read_text()) == yaml.safe_load(
        (PROJECT_ROOT / "helpers" / "project.yml").read_text()
    )


def test_the_generated_project_carries_the_answers(generated: Path) -> None:
    variables = yaml.safe_load((generated / "helpers" / "project.yml").read_text())["variables"]
    defaults = {name: spec["default"] for name, spec in variables.items()}
    assert defaults["request_columns"] == ["loan_amount", "term_months", "purpose"]
    for name, value in ANSWERS.items():
        if name in defaults and name != "request_columns":
            assert defaults[name] == value, name
    answers = yaml.safe_load((generated / ".copier-answers.yml").read_text())
    assert answers["_src_path"] and answers["project_name"] == "credit-risk"  # `copier update` needs both
    for path in (
        "Makefile",
        "databricks.yml",
        "app/app.py",
        "helpers/platform.py",
        "tests/test_notebooks.py",
    ):
        assert (generated / path).is_file(), path
    assert not (generated / "copier.yml").exists() and not list(generated.rglob("*.jinja"))
    bundle = yaml.safe_load((generated / "databricks.yml").read_text())
    assert bundle["include"] == ["helpers/project.yml"]
    for path in (generated / "notebooks").rglob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path


def test_the_generated_project_runs_its_smoke_subset(generated: Path) -> None:
    """`make smoke` there, with this venv (INSTALL= skips installing; its own helpers come first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELPERS_", "MLFLOW_", "PYTHONPATH"))}
    started = time.perf_counter()
    done = subprocess.run(
        ["make", "smoke", "INSTALL=", f"VENV={Path(sys.prefix)}"],
        cwd=generated, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    print(f"generated project's smoke run: {time.perf_counter() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
