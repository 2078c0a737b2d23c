"""The pages under Streamlit's AppTest, against a real local workspace server in a temporary state dir.

No demo tables here, so a run of the real job notebook fails (at its first table read): that is the
failed-run path. The full chain (a run that succeeds and is drawn) is in ``test_browser.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import fresh_state
import pytest
from app_server import use_server
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import JobParameterDefinition, NotebookTask, QueueSettings, Source, Task
from streamlit.testing.v1 import AppTest

from helpers.config import PROJECT_ROOT

VIEWS = PROJECT_ROOT / "app" / "views"
JOB_NAME = "shelf_layout_optimization"


@pytest.fixture(scope="module")
def w(
    tmp_path_factory: pytest.TempPathFactory, module_patch: pytest.MonkeyPatch
) -> Iterator[WorkspaceClient]:
    from helpers.local.server.process import stop_server

    state = fresh_state.seed(tmp_path_factory.mktemp("app_pages_state"))
    module_patch.setenv("HELPERS_STATE_DIR", str(state))
    module_patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        yield use_server(module_patch, state)
    finally:
        stop_server(state)


def page(name: str) -> AppTest:
    return AppTest.from_file(str(VIEWS / name), default_timeout=60)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_without_the_job_the_shelf_page_says_how_to_create_it(w: WorkspaceClient) -> None:
    at = page("shelf_optimization.py").run()
    assert any("There is no job named 'shelf_layout_optimization'" in e for e in errors(at))
    assert not at.button  # no form without a job


def test_without_endpoints_the_endpoints_page_says_where_they_come_from(w: WorkspaceClient) -> None:
    at = page("endpoints.py").run()
    assert not at.exception
    assert "No serving endpoints yet" in at.markdown[0].value


@pytest.fixture(scope="module")
def job_id(w: WorkspaceClient) -> int:
    defaults = {
        "run_id": "{{job.run_id}}",
        "store_id": "1",
        "shelf_length_cm": "300",
        "candidate_products": "",
        "max_facings": "3",
        "n_scenarios": "1",
    }
    return w.jobs.create(
        name=JOB_NAME,
        tasks=[
            Task(
                task_key="main",
                notebook_task=NotebookTask(
                    notebook_path="notebooks/jobs/shelf_layout_optimization", source=Source.WORKSPACE
                ),
            )
        ],
        parameters=[JobParameterDefinition(name=k, default=v) for k, v in defaults.items()],
        max_concurrent_runs=4,
        queue=QueueSettings(enabled=True),
    ).job_id


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("shelf_length_cm", 20.0, "Shelf length must be between 50 and 2000 cm (got 20.0)."),
        ("shelf_length_cm", 5000.0, "Shelf length must be between 50 and 2000 cm (got 5000.0)."),
        ("all_products", False, "Candidate products: enter at least one product id, or tick 'All products'."),
        ("store_id", 0, "Store id must be a whole number of at least 1 (got 0)."),
    ],
)
def test_a_bad_form_shows_a_clear_message_and_starts_nothing(
    w: WorkspaceClient, job_id: int, field: str, value: object, message: str
) -> None:
    at = page("shelf_optimization.py").run()
    widget = next(x for x in [*at.number_input, *at.checkbox] if x.key == field)
    widget.set_value(value)
    at.button[0].click().run()
    assert message in errors(at)
    assert list(w.jobs.list_runs(job_id=job_id)) == []


def test_optimize_starts_runs_listed_at_once_and_a_failed_run_shows_why(
    w: WorkspaceClient, job_id: int
) -> None:
    at = page("shelf_optimization.py").run()
    at.number_input(key="store_id").set_value(2)
    at.checkbox(key="all_products").uncheck()
    at.text_input(key="products").input("3, 5")
    at.button[0].click().run()
    assert not errors(at) and not at.exception
    (first,) = list(w.jobs.list_runs(job_id=job_id))
    params = {p.name: p.value for p in w.jobs.get_run(first.run_id).job_parameters}
    assert [params[k] for k in ("store_id", "candidate_products", "shelf_length_cm")] == ["2", "3,5", "300"]
    assert at.dataframe[0].value["run_id"].tolist() == [first.run_id]
    assert at.selectbox(key="run_choice").value == first.run_id

    at.number_input(key="store_id").set_value(3)
    at.button[0].click().run()  # a second run while the first is still in flight
    second, _ = list(w.jobs.list_runs(job_id=job_id))
    assert at.dataframe[0].value["run_id"].tolist() == [second.run_id, first.run_id]
    assert at.selectbox(key="run_choice").value == second.run_id

    ended = [
        w.jobs.wait_get_run_job_terminated_or_skipped(r.run_id, timeout=timedelta(minutes=5))
        for r in (second, first)
    ]
    assert all(r.state.result_state.value == "FAILED" and r.state.state_message for r in ended)
    reloaded = page("shelf_optimization.py").run()  # a new session: the history comes from the Jobs API
    assert reloaded.dataframe[0].value["state"].tolist() == ["FAILED", "FAILED"]
    # The reason is the task's error from runs/get-output: the state message only says to look there.
    reasons = [w.jobs.get_run_output(r.tasks[0].run_id).error for r in ended]
    assert all(reasons) and all(reason not in r.state.state_message for r, reason in zip(ended, reasons))
    assert f"Run {second.run_id} ended FAILED: {reasons[0]}" in errors(reloaded)
    reloaded.selectbox(key="run_choice").set_value(first.run_id).run()
    assert f"Run {first.run_id} ended FAILED: {reasons[1]}" in errors(reloaded)


def test_the_job_can_be_named_by_id(w: WorkspaceClient, job_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELF_JOB_NAME", "no-such-job")
    monkeypatch.setenv("SHELF_JOB_ID", str(job_id))
    at = page("shelf_optimization.py").run()
    assert not any("There is no job" in e for e in errors(at))
    assert at.button[0].label == "Optimize" and at.dataframe  # the form, and the job's runs


def test_fraud_page_refuses_a_bad_transaction_before_calling_the_endpoint(w: WorkspaceClient) -> None:
    at = page("fraud_check.py").run()
    at.number_input(key="hour").set_value(25)
    at.number_input(key="amount").set_value(0.0)
    at.button[0].click().run()
    assert "Hour must be a whole number from 0 to 23 (got 25)." in errors(at)
    assert "Amount must be above 0 (got 0.0)." in errors(at)


def test_fraud_page_reports_a_missing_endpoint(w: WorkspaceClient) -> None:
    at = page("fraud_check.py").run()
    at.button[0].click().run()
    assert any("The endpoint 'fraud-scoring' did not score the transaction" in e for e in errors(at))


@pytest.fixture(scope="module")
def fraud_endpoint(w: WorkspaceClient) -> Iterator[str]:
    """A real registered classifier (features in the request) behind ``fraud-scoring``."""
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from helpers import data, platform, serving

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    platform.workspace_client()  # points MLflow at this state dir's registry
    demo = data.generate_demo_data(n_customers=200, n_transactions=2_000, n_products=5, n_stores=1, seed=7)
    x = demo.transactions[REQUEST_COLUMNS]
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        (
                            "categories",
                            OneHotEncoder(handle_unknown="ignore"),
                            ["merchant_category", "channel"],
                        ),
                        ("numbers", StandardScaler(), ["amount", "hour", "distance_from_home_km"]),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(x, demo.transactions["is_fraud"])
    name = "main.serving_demo.fraud_model"
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        pyfunc_predict_fn="predict_proba",
        registered_model_name=name,
        input_example=x.head(3),
        pip_requirements=["scikit-learn"],  # skips inferring them (a subprocess per model)
    )
    serving.deploy_endpoint(w, "fraud-scoring", [serving.served_entity(name, info.registered_model_version)])
    yield "fraud-scoring"
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


REQUEST_COLUMNS = ["customer_id", "amount", "merchant_category", "hour", "channel", "distance_from_home_km"]


def test_fraud_page_shows_the_endpoints_score_with_a_plain_verdict(
    w: WorkspaceClient, fraud_endpoint: str
) -> None:
    from dashboard import fraud

    at = page("fraud_check.py").run()
    at.number_input(key="amount").set_value(2500.0)
    at.number_input(key="hour").set_value(3)
    at.number_input(key="distance").set_value(800.0)
    at.selectbox(key="merchant_category").set_value("electronics")
    at.button[0].click().run()
    assert not at.exception
    record = dict(zip(REQUEST_COLUMNS, [1, 2500.0, "electronics", 3, "online", 800.0]))
    expected = w.serving_endpoints.query(fraud_endpoint, dataframe_records=[record]).predictions[0][-1]
    assert at.metric[0].value == f"{expected:.3f}"
    shown = [m.value for m in [*at.error, *at.warning, *at.success]]
    assert shown == [fraud.verdict(expected, 0.5)[1]]
