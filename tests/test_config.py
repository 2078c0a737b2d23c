from __future__ import annotations

from pathlib import Path

import pytest

from helpers.config import PROJECT_ROOT, get_settings, project_settings
from helpers.names import parse_uc_name


def test_defaults_are_local_and_small(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DATABRICKS_RUNTIME_VERSION", "HELPERS_STATE_DIR", "HELPERS_CATALOG"):
        monkeypatch.delenv(var, raising=False)
    cfg = get_settings()
    assert cfg.backend == "local"
    assert cfg.state_dir == PROJECT_ROOT / ".workspace"
    project = project_settings()  # this project's names (project.yml) over the demo's
    catalog, schema = project.get("catalog", "main"), project.get("schema", "serving_demo")
    assert cfg.table("t") == f"{catalog}.{schema}.t"


def test_environment_then_arguments_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELPERS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HELPERS_CATALOG", "dev")
    monkeypatch.setenv("HELPERS_N_CUSTOMERS", "7")
    cfg = get_settings(schema="s1", n_customers=None)
    assert (cfg.state_dir, cfg.catalog, cfg.schema, cfg.n_customers) == (tmp_path, "dev", "s1", 7)
    assert get_settings(catalog="prod").catalog == "prod"


def test_databricks_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert get_settings().backend == "databricks"


def test_bad_settings_name_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        get_settings(catalgo="x")
    monkeypatch.setenv("HELPERS_N_CUSTOMERS", "many")
    with pytest.raises(ValueError, match="n_customers"):
        get_settings()


@pytest.mark.parametrize(
    "name",
    ["a.b", "a.b.c.d", "a.b/../c.d", "../x.y.z", "a.b.c d", "a.b.", "1a.b.c", "a.b.c;drop", 3, "a.b.ç"],
)
def test_bad_uc_names_are_refused(name: object) -> None:
    with pytest.raises(ValueError):
        parse_uc_name(name)


def test_good_uc_name() -> None:
    assert parse_uc_name("main.serving_demo.Customer_2").name == "Customer_2"


def test_project_file_values_sit_between_defaults_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = tmp_path / "project.yml"
    project.write_text(
        "variables:\n"
        "  catalog: {default: lending}\n"
        "  request_columns: {type: complex, default: [loan_amount, purpose]}\n"
        "  spark_version: {default: 15.4.x}\n"  # a bundle-only variable is not a setting
    )
    values = project_settings(project)
    assert values == {"catalog": "lending", "request_columns": ("loan_amount", "purpose")}
    monkeypatch.setenv("HELPERS_REQUEST_COLUMNS", "a, b")
    assert get_settings().request_columns == ("a", "b")
    project.write_text("variables:\n  catalog: {default: [1, 2]}\n")
    with pytest.raises(ValueError, match="'catalog' must be a string"):
        project_settings(project)
