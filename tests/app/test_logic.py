"""Page logic that needs no server: form checks, run rows, verdicts, drawing, configuration."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from databricks.sdk.service.jobs import BaseRun, JobParameter, RunLifeCycleState, RunResultState, RunState

from dashboard import config, fraud, shelf
from helpers import data
from helpers import shelf as job_shelf


def test_the_form_checks_mirror_the_job_checks() -> None:
    assert shelf.SHELF_LENGTH_RANGE_CM == job_shelf.SHELF_LENGTH_RANGE_CM
    assert shelf.MAX_FACINGS_RANGE == job_shelf.MAX_FACINGS_RANGE
    assert shelf.N_SCENARIOS_RANGE == job_shelf.N_SCENARIOS_RANGE
    assert fraud.MERCHANT_CATEGORIES == data.MERCHANT_CATEGORIES
    assert fraud.CHANNELS == data.CHANNELS


def test_a_good_form_becomes_job_parameters_the_job_accepts() -> None:
    parameters, errors = shelf.validate_form(2, 350.0, False, "3, 7,7 ,12", 3, 1)
    assert errors == []
    assert parameters == {
        "store_id": "2",
        "shelf_length_cm": "350",
        "candidate_products": "3,7,12",
        "max_facings": "3",
        "n_scenarios": "1",
    }
    request = job_shelf.parse_request({**parameters, "run_id": "1", "seed": "42"})
    assert request.candidate_products == (3, 7, 12)
    assert request.shelf_length_cm == 350.0


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ((1, 10.0, True, "", 3, 1), "Shelf length must be between 50 and 2000 cm"),
        ((1, 2500.0, True, "", 3, 1), "Shelf length must be between 50 and 2000 cm"),
        ((1, 300.0, False, "  ", 3, 1), "enter at least one product id"),
        ((1, 300.0, False, "3, x7", 3, 1), "not x7"),
        ((0, 300.0, True, "", 3, 1), "Store id must be a whole number of at least 1"),
        ((1, 300.0, True, "", 11, 1), "Max facings must be a whole number between 1 and 10"),
        ((1, 300.0, True, "", 3, 0), "Demand scenarios must be a whole number between 1 and 5000"),
    ],
)
def test_a_bad_form_gets_a_message_naming_the_field(form: tuple, message: str) -> None:
    parameters, errors = shelf.validate_form(*form)
    assert parameters == {}
    assert any(message in e for e in errors), errors


def test_ticking_all_products_ignores_the_id_field() -> None:
    parameters, errors = shelf.validate_form(1, 300.0, True, "not ids", 3, 1)
    assert errors == [] and parameters["candidate_products"] == ""


def _run(
    life: RunLifeCycleState, result: RunResultState | None, start: int, end: int, message: str = ""
) -> BaseRun:
    return BaseRun(
        run_id=7,
        state=RunState(life_cycle_state=life, result_state=result, state_message=message),
        start_time=start,
        end_time=end,
        job_parameters=[
            JobParameter(name="store_id", value="2"),
            JobParameter(name="shelf_length_cm", default="300"),
        ],
    )


def test_a_running_run_counts_its_time_up_to_now() -> None:
    view = shelf.run_view(_run(RunLifeCycleState.RUNNING, None, 1_000_000, 0), now_ms=1_012_500)
    assert (view.state, view.active, view.succeeded, view.elapsed_s) == ("RUNNING", True, False, 12.5)
    assert (view.store_id, view.shelf_length_cm) == ("2", "300")


def test_a_finished_run_shows_its_result_and_message() -> None:
    run = _run(
        RunLifeCycleState.TERMINATED, RunResultState.FAILED, 1_000_000, 1_003_000, "store 9 does not exist"
    )
    view = shelf.run_view(run, now_ms=9_999_999)
    assert (view.state, view.active, view.elapsed_s, view.message) == (
        "FAILED",
        False,
        3.0,
        "store 9 does not exist",
    )
    frame = shelf.runs_frame([view])
    assert frame.to_dict(orient="records")[0]["elapsed"] == "3 s"
    assert shelf.format_seconds(125) == "2 min 05 s"


def test_a_result_row_is_drawn_as_a_png() -> None:
    positions = [
        {"position": 2, "name": "B", "category": "snacks", "facings": 1, "unit_width_cm": 20.0,
         "width_cm": 20.0, "x_start_cm": 30.0, "expected_units": 5.0, "expected_margin": 10.0,
         "fill_rate": 1.0},
        {"position": 1, "name": "A", "category": "drinks", "facings": 2, "unit_width_cm": 15.0,
         "width_cm": 30.0, "x_start_cm": 0.0, "expected_units": 9.0, "expected_margin": 21.0,
         "fill_rate": 0.9},
    ]  # fmt: skip
    layout = shelf.layout_frame({"layout_json": json.dumps(positions)})
    assert layout["name"].tolist() == ["A", "B"]
    png = shelf.draw_shelf(layout, 100.0, "run 7")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert shelf.draw_shelf(pd.DataFrame(columns=layout.columns), 100.0, "empty")[:4] == b"\x89PNG"


def test_a_transaction_form_becomes_one_request_record() -> None:
    record, errors = fraud.transaction_record(17, 812.5, "travel", 3, "online", 250.0)
    assert errors == []
    assert record == {"customer_id": 17, "amount": 812.5, "merchant_category": "travel", "hour": 3,
                      "channel": "online", "distance_from_home_km": 250.0}  # fmt: skip
    _, errors = fraud.transaction_record(17, 0.0, "casino", 24, "online", -1.0)
    assert len(errors) == 4 and "Hour must be a whole number from 0 to 23 (got 24)." in errors


def test_verdicts_read_plainly() -> None:
    assert fraud.verdict(0.93, 0.5)[0] == "fraud" and "Likely fraud (93%)" in fraud.verdict(0.93, 0.5)[1]
    assert fraud.verdict(0.3, 0.5)[0] == "review"
    assert fraud.verdict(0.02, 0.5) == ("ok", "Looks normal (2%). No action needed.")


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SHELF_JOB_ID",
        "SHELF_JOB_NAME",
        "SHELF_RESULTS_ENDPOINT",
        "FRAUD_ENDPOINT",
        "FRAUD_THRESHOLD",
    ):
        monkeypatch.delenv(name, raising=False)
    defaults = config.load_config()
    assert (defaults.shelf_job_name, defaults.shelf_job_id) == ("shelf_layout_optimization", None)
    assert (defaults.shelf_results_endpoint, defaults.fraud_endpoint) == ("shelf-layouts", "fraud-scoring")
    monkeypatch.setenv("SHELF_JOB_ID", "42")
    monkeypatch.setenv("FRAUD_ENDPOINT", "fraud-v2")
    assert (config.load_config().shelf_job_id, config.load_config().fraud_endpoint) == (42, "fraud-v2")
    monkeypatch.setenv("FRAUD_THRESHOLD", "lots")
    with pytest.raises(ValueError, match="FRAUD_THRESHOLD"):
        config.load_config()
    monkeypatch.setenv("FRAUD_THRESHOLD", "0.5")
    monkeypatch.setenv("SHELF_JOB_ID", "my-job")
    with pytest.raises(ValueError, match="SHELF_JOB_ID"):
        config.load_config()
