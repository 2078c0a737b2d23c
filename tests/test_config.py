from __future__ import annotations

from pathlib import Path

import pytest

from helpers import config
from helpers.config import PROJECT_ROOT, WorkspaceNotConfigured, get_settings, project_settings
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


_WORKSPACE_VARIABLES = (
    "HELPERS_BACKEND",
    "DATABRICKS_RUNTIME_VERSION",
    "DATABRICKS_HOST",
    "DATABRICKS_CONFIG_PROFILE",
    "DATABRICKS_CONFIG_FILE",
)


@pytest.fixture
def no_workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No backend chosen, no workspace configured; the CLI config file is ``tmp_path/.databrickscfg``."""
    for name in _WORKSPACE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / ".databrickscfg"
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(path))
    return path


def test_databricks_is_detected_on_a_cluster(no_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "18.0")
    assert get_settings().backend == "databricks"


def test_local_is_the_default_off_a_cluster(no_workspace: Path) -> None:
    assert get_settings().backend == "local"


def test_local_can_be_asked_for_on_a_cluster(no_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "18.0")
    monkeypatch.setenv("HELPERS_BACKEND", "local")
    assert get_settings().backend == "local"


def test_databricks_from_an_ide_with_a_host(no_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPERS_BACKEND", "databricks")
    monkeypatch.setenv("DATABRICKS_HOST", "https://example.cloud.databricks.com")
    assert get_settings().backend == "databricks"


def test_databricks_from_an_ide_with_a_cli_profile(no_workspace: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HELPERS_BACKEND", "Databricks")
    no_workspace.write_text("[work]\nhost = https://example.cloud.databricks.com\nauth_type = pat\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_PROFILE", "work")
    assert get_settings().backend == "databricks"
    assert "profile work" in config.workspace_target()
    monkeypatch.delenv("DATABRICKS_CONFIG_PROFILE")  # no profile named: the DEFAULT one, absent here
    with pytest.raises(WorkspaceNotConfigured, match="DEFAULT profile"):
        get_settings()
    no_workspace.write_text("[DEFAULT]\nhost = https://example.cloud.databricks.com\n")
    assert get_settings().backend == "databricks"


def test_databricks_without_a_workspace_says_what_to_set(
    no_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELPERS_BACKEND", "databricks")
    with pytest.raises(WorkspaceNotConfigured, match="databricks auth login"):
        get_settings()
    no_workspace.write_text("[other]\nhost = https://example.cloud.databricks.com\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_PROFILE", "work")
    with pytest.raises(WorkspaceNotConfigured, match="profile 'work'"):
        get_settings()


def test_an_unknown_backend_is_refused(no_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPERS_BACKEND", "cloud")
    with pytest.raises(ValueError, match="HELPERS_BACKEND must be 'local' or 'databricks'"):
        get_settings()


def test_a_missing_project_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="project.yml is missing"):
        project_settings(tmp_path / "project.yml")


def test_the_project_file_travels_inside_the_package() -> None:
    assert config.PROJECT_FILE == PROJECT_ROOT / "helpers" / "project.yml"
    assert project_settings()["schema"] == get_settings().schema


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
        "  warehouse_id: {default: abc123}\n"  # a bundle-only variable is not a setting
    )
    values = project_settings(project)
    assert values == {"catalog": "lending", "request_columns": ("loan_amount", "purpose")}
    monkeypatch.setenv("HELPERS_REQUEST_COLUMNS", "a, b")
    assert get_settings().request_columns == ("a", "b")
    project.write_text("variables:\n  catalog: {default: [1, 2]}\n")
    with pytest.raises(ValueError, match="'catalog' must be a string"):
        project_settings(project)
