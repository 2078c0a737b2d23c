"""Bring your own data: a loan-applications CSV (not the demo generator, other column names) runs through
the notebooks (features, model, endpoints, rollout, monitoring) and the monitoring job; bad sources are
refused with one message naming the column, and write nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import fresh_state
import pandas as pd
import papermill
import pytest
import yaml
from sample_data import LOAN_MAPPING, loan_applications

from helpers.config import PROJECT_ROOT, get_settings
from helpers.run_notebooks import DEMO_DATA_ONLY, for_project
from helpers.sources import SourceError, own_event_tables

MAPPING = LOAN_MAPPING
pytestmark = pytest.mark.long  # a chain of notebooks


def use_mapping(patch: pytest.MonkeyPatch, folder: Path, mapping: dict[str, str] = MAPPING) -> Path:
    """The column mapping as a user sets it (HELPERS_* stands in for project.yml), a fresh state dir."""
    for name, value in mapping.items():
        patch.setenv(f"HELPERS_{name.upper()}", value)
    patch.setenv("HELPERS_STATE_DIR", str(fresh_state.seed(folder / "state")))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


@pytest.fixture
def mapping_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return use_mapping(monkeypatch, tmp_path)


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("breakage", "column", "problem"),
    [
        (lambda f: f.drop(columns="loan_amount"), "loan_amount", "missing column"),
        (lambda f: f.assign(applied_at="not a date"), "applied_at", "expected a timestamp"),
        (
            lambda f: f.assign(defaulted=f.defaulted.astype(str).replace("1", "yes")),
            "defaulted",
            "expected an",
        ),
        (lambda f: f.assign(defaulted=f.defaulted * 2), "defaulted", "other than 0 and 1"),
        (lambda f: f.assign(application_id=f.application_id % 50), "application_id", "duplicate"),
        (lambda f: f.assign(applicant_id=f.applicant_id.where(f.index != 3)), "applicant_id", "null"),
    ],
    ids=["missing", "timestamp type", "label type", "label values", "duplicate keys", "null key"],
)
def test_a_bad_source_is_refused_naming_the_column(
    mapping_env: Path, breakage, column: str, problem: str
) -> None:
    source = write(breakage(loan_applications(60)), mapping_env / "bad.csv")
    with pytest.raises(SourceError, match=rf"(?s){column}: [^\n]*{problem}"):
        own_event_tables(get_settings(source=source))


def test_empty_and_unreadable_sources_say_so(mapping_env: Path) -> None:
    (mapping_env / "empty.csv").write_text("")
    (mapping_env / "header.csv").write_text(",".join(loan_applications(3).columns) + "\n")
    cases = {
        str(mapping_env / "empty.csv"): "is empty",
        str(mapping_env / "header.csv"): "has no rows",
        str(mapping_env / "nope.parquet"): "no such file",
        str(mapping_env / "data.xlsx"): "neither a .csv/.parquet file nor a table name",
        "main.risk": "neither a .csv/.parquet file nor a table name",
    }
    for source, message in cases.items():
        with pytest.raises(SourceError, match=message):
            own_event_tables(get_settings(source=source))


def test_the_mapping_must_give_each_role_its_own_column(mapping_env: Path) -> None:
    source = write(loan_applications(30), mapping_env / "ok.csv")
    with pytest.raises(SourceError, match="more than one role"):
        own_event_tables(get_settings(source=source, label="loan_amount"))


def test_a_valid_source_splits_into_point_in_time_features_and_events(mapping_env: Path) -> None:
    frame = loan_applications(200)
    tables = own_event_tables(get_settings(source=write(frame, mapping_env / "ok.csv")))
    assert list(tables.features.columns) == ["applicant_id", "applied_at", "annual_income", "credit_score",
                                             "open_accounts"]  # fmt: skip
    assert tables.timeseries_column == "applied_at"
    assert len(tables.events) == 200 and tables.events["defaulted"].isin([0, 1]).all()
    assert str(tables.events["applied_at"].dtype) == "datetime64[us]"


def test_a_source_table_is_read_as_a_plain_table(mapping_env: Path) -> None:
    """A source table usually has no primary key: it is read with spark.table, which fe.read_table is not."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from helpers import platform
    from helpers.local.tables import DeltaTables

    cfg = platform.settings(source="main.raw.loan_applications")
    write_deltalake(
        str(DeltaTables(cfg.state_dir).path(cfg.source)), pa.Table.from_pandas(loan_applications(50))
    )
    assert len(own_event_tables(cfg).events) == 50


def run(path: Path, out: Path, **parameters: object) -> None:
    declared = papermill.inspect_notebook(str(path))
    papermill.execute_notebook(
        str(path), str(out / path.name), parameters={k: v for k, v in parameters.items() if k in declared},
        cwd=str(path.parent), kernel_name="python3", progress_bar=False,
    )  # fmt: skip


def test_a_bad_source_stops_notebook_00_before_anything_is_written(mapping_env: Path) -> None:
    source = write(loan_applications(60).drop(columns="purpose"), mapping_env / "bad.csv")
    with pytest.raises(papermill.PapermillExecutionError, match="purpose: missing column"):
        run(PROJECT_ROOT / "notebooks" / "00_setup_feature_tables.ipynb", mapping_env, source=source)
    assert not (mapping_env / "state" / "tables").exists() or not any(
        (mapping_env / "state" / "tables").rglob("*")
    )


@pytest.fixture(scope="module")
def served_own_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every notebook that applies run in order on the loan applications; yields the state dir."""
    from helpers.local.server.process import stop_server

    patch = pytest.MonkeyPatch()
    folder = use_mapping(patch, tmp_path_factory.mktemp("own_data"))
    source = write(loan_applications(), folder / "applications.csv")
    patch.setenv("HELPERS_SOURCE", source)
    patch.setenv("HELPERS_SMOKE", "1")
    all_notebooks = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    notebooks = for_project(all_notebooks, get_settings(source=source))
    assert {path.stem for path in notebooks}.isdisjoint(DEMO_DATA_ONLY) and len(notebooks) == 7
    try:
        for notebook in notebooks:
            run(notebook, folder, source=source)
        yield folder / "state"
    finally:
        stop_server(folder / "state")
        patch.undo()


def test_own_data_flows_through_features_model_and_endpoints(served_own_data: Path) -> None:
    from databricks.sdk import WorkspaceClient

    from helpers.local.server.process import ensure_server
    from helpers.local.tables import DeltaTables

    tables = DeltaTables(served_own_data)
    assert tables.meta("lending.risk.applicant_profiles").primary_keys == ["applicant_id", "applied_at"]
    assert tables.read("lending.risk.applications").num_rows == 1_500
    server = ensure_server(served_own_data)
    w = WorkspaceClient(host=server.url, token=server.token, auth_type="pat")
    endpoints = {e.name for e in w.serving_endpoints.list()}
    assert endpoints == {"default-risk", "default-risk-request", "default-risk-precomputed"}  # 08 adds one
    request = {"applicant_id": 1_001, "loan_amount": 30_000.0, "term_months": 60, "purpose": "medical"}
    risky = w.serving_endpoints.query("default-risk", dataframe_records=[request]).predictions[0]
    safe = w.serving_endpoints.query(
        "default-risk",
        dataframe_records=[{**request, "loan_amount": 1_000.0, "term_months": 36, "purpose": "car"}],
    ).predictions[0]
    assert 0.0 <= safe < risky <= 1.0


def test_the_monitoring_job_runs_on_own_data_and_fails_the_run_when_a_threshold_is_crossed(
    served_own_data: Path,
) -> None:
    """The bundle's ``model_monitoring`` job (its parameters, ``fail_on_threshold`` on) through the Jobs API:
    with thresholds nothing crosses it succeeds; with ``max_psi = 0`` the run fails naming the metric."""
    from databricks.sdk import WorkspaceClient

    from helpers import jobs, platform
    from helpers.local.server.process import ensure_server

    bundle = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())["resources"]["jobs"]
    parameters = {
        p["name"]: p["default"] for p in bundle["model_monitoring"]["parameters"] if "${" not in p["default"]
    }
    assert parameters["fail_on_threshold"] == "true"
    server = ensure_server(served_own_data)
    w = WorkspaceClient(host=server.url, token=server.token, auth_type="pat")
    path = platform.notebook_task_path("notebooks/07_monitoring_inference_tables")
    lax = {"min_f1_score": "0", "max_psi": "1000", "max_js_distance": "1", "max_error_rate": "1"}
    job_id = jobs.create_or_update_job(w, "model_monitoring", path, parameters | lax)
    run = jobs.wait_for_run(w, w.jobs.run_now(job_id).run_id)
    assert jobs.succeeded(run), jobs.run_error(w, run)
    assert json.loads(jobs.run_output(w, run))["decision"] == "keep"

    job_id = jobs.create_or_update_job(w, "model_monitoring", path, parameters | lax | {"max_psi": "0"})
    run = jobs.wait_for_run(w, w.jobs.run_now(job_id).run_id)
    assert not jobs.succeeded(run)
    error = jobs.run_error(w, run) or ""
    assert "ThresholdCrossed" in error and "population_stability_index" in error and "> max_psi 0.0" in error
    assert "(requests to every version)" in error and re.search(r"version \d+: ", error)


def test_two_different_attribute_rows_at_one_instant_are_refused(mapping_env: Path) -> None:
    frame = loan_applications(40)
    frame.loc[1, ["applicant_id", "applied_at"]] = frame.loc[0, ["applicant_id", "applied_at"]].to_numpy()
    frame.loc[1, "annual_income"] = frame.loc[0, "annual_income"] + 1
    with pytest.raises(SourceError, match=r"entity \d+ has different attributes .* applied_at"):
        own_event_tables(get_settings(source=write(frame, mapping_env / "clash.csv")))
