"""What monitoring adds to the platform's monitor: unpacking payload rows, operations, the recommendation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from helpers import monitoring


def _payload(i: int, records: list[dict], predictions: list[float] | None, status: int = 200) -> dict:
    return {
        "databricks_request_id": f"r{i}",
        "client_request_id": str(i),
        "request_time": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i),
        "status_code": status,
        "execution_duration_ms": 10 + i,
        "served_entity_id": "a" if i % 2 else "b",
        "request": json.dumps({"dataframe_records": records}),
        "response": json.dumps(
            {"predictions": predictions} if status == 200 else {"error_code": "BAD_REQUEST"}
        ),
    }


def test_unpack_gives_one_row_per_record_and_keeps_failed_requests() -> None:
    payloads = pd.DataFrame(
        [
            _payload(1, [{"amount": 5.0}, {"amount": 7.0}], [0.1, 0.9]),
            _payload(2, [{"amount": 1.0}], None, status=400),
            {
                **_payload(3, [], None),
                "request": json.dumps({"dataframe_split": {"columns": ["amount"], "data": [[3.0]]}}),
                "response": json.dumps({"predictions": [0.5]}),
            },
        ]
    )
    names = pd.DataFrame(
        {
            "served_entity_id": ["a", "b"],
            "served_entity_name": ["champion", "challenger"],
            "entity_version": ["1", "2"],
        }
    )
    frame = monitoring.unpack_payloads(payloads, names)

    assert frame["amount"].tolist()[:2] == [5.0, 7.0] and frame["prediction"].tolist()[:2] == [0.1, 0.9]
    assert len(frame) == 4
    failed = frame[frame.status_code == 400].iloc[0]
    assert np.isnan(failed["prediction"]) and failed["served_entity_name"] == "challenger"
    assert frame.iloc[-1]["amount"] == 3.0 and frame.iloc[-1]["served_entity_name"] == "champion"


def _window(day: str) -> dict:
    start = pd.Timestamp(day, tz="UTC")
    return {"start": start, "end": start + pd.Timedelta(days=1)}


def _averaged(one: float) -> dict:
    return {"one_vs_all": {"0": 0.99, "1": one}, "macro": None, "weighted": None}


def test_the_recommendation_reads_metric_table_rows_and_names_metric_value_threshold_and_version() -> None:
    """The newest labelled window's F1 of class 1, PSI / Jensen-Shannon per feature, and the error rate."""
    quality = pd.DataFrame(
        {
            "window": [_window("2026-01-01"), _window("2026-01-02"), _window("2026-01-03")],
            "f1_score": [_averaged(0.9), _averaged(0.2), None],  # the newest day has no label yet
        }
    )
    drift = pd.DataFrame(
        {
            "column_name": ["amount", "channel"],
            "population_stability_index": [0.4, None],
            "js_distance": [None, 0.05],
        }
    )
    thresholds = monitoring.Thresholds(
        min_f1_score=0.3, max_psi=0.25, max_js_distance=0.1, max_error_rate=0.05
    )

    decision, reasons = monitoring.recommend(quality, drift, 0.1, thresholds, version="2")

    assert decision == "retrain"
    assert reasons == [
        "f1_score of class 1 is 0.200 < min_f1_score 0.3 (version 2, window from 2026-01-02 00:00)",
        "amount drifted: population_stability_index 0.400 > max_psi 0.25 (version 2)",
        "error rate 10.0% > max_error_rate 5.0% (version 2)",
    ]
    calm = drift.assign(population_stability_index=[0.1, None])
    assert monitoring.recommend(quality.head(1), calm, 0.0, thresholds, version="2") == ("keep", [])
    assert monitoring.recommend(quality.tail(1), calm, 0.0, thresholds, version="2") == ("keep", [])
    drifted = calm.assign(js_distance=[None, 0.3])
    _, reasons = monitoring.recommend(quality.head(1), drifted, 0.0, thresholds, version="3")
    assert reasons == ["channel drifted: js_distance 0.300 > max_js_distance 0.1 (version 3)"]
    _, reasons = monitoring.recommend(
        quality.head(1), drifted.assign(model_version="*"), 0.0, thresholds, version="3"
    )
    assert reasons == ["channel drifted: js_distance 0.300 > max_js_distance 0.1 (requests to every version)"]


def test_operations_over_time_counts_errors_and_latency() -> None:
    requests = pd.DataFrame([_payload(i, [], None, status=500 if i == 3 else 200) for i in range(10)])
    ops = monitoring.operations_over_time(requests, n_buckets=2)

    assert ops["requests"].sum() == 10 and len(ops) == 2
    assert ops["error_rate"].tolist() == [0.2, 0.0]
    assert (ops["p99_ms"] >= ops["p50_ms"]).all()
