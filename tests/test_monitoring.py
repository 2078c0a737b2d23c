"""Monitoring computations: unpacking payload rows, PSI/KS drift, quality per version, operations, advice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

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


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = pd.Series(rng.normal(0, 1, 5000))
    assert monitoring.psi(reference, pd.Series(rng.normal(0, 1, 5000))) < 0.02
    assert monitoring.psi(reference, pd.Series(rng.normal(1.0, 1, 5000))) > 0.25
    cats = pd.Series(["a"] * 50 + ["b"] * 50)
    assert monitoring.psi(cats, cats) == pytest.approx(0.0)
    assert monitoring.psi(cats, pd.Series(["a"] * 90 + ["c"] * 10)) > 0.25
    with pytest.raises(ValueError, match="non-empty"):
        monitoring.psi(pd.Series([], dtype=float), reference)


def test_drift_report_flags_the_shifted_feature() -> None:
    rng = np.random.default_rng(1)
    reference = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, 3000),
            "hour": rng.integers(0, 24, 3000),
            "channel": rng.choice(["web", "pos"], 3000),
        }
    )
    current = reference.sample(1000, random_state=1).assign(amount=lambda d: d.amount * 3)
    report = monitoring.drift_report(reference, current, ["amount", "hour", "channel"])

    assert report.iloc[0]["feature"] == "amount" and report.iloc[0]["psi"] > 0.25
    assert report.set_index("feature").loc["amount", "ks_pvalue"] < 1e-6
    assert report.set_index("feature").loc["hour", "psi"] < 0.1
    assert np.isnan(report.set_index("feature").loc["channel", "ks_statistic"])


def test_quality_by_version_and_the_recommendation() -> None:
    frame = pd.DataFrame(
        {
            "version": ["1"] * 4 + ["2"] * 4,
            "label": [0, 0, 1, 1, 0, 0, 1, 1],
            "score": [0.1, 0.2, 0.8, 0.9, 0.9, 0.2, 0.1, 0.8],
        }
    )
    quality = monitoring.quality_by(frame, "version", label="label", score="score", threshold=0.5)

    assert quality["roc_auc"].tolist() == [1.0, 0.25]  # version 2 ranks 1 of 4 (positive, negative) pairs
    assert quality["precision"].tolist() == [1.0, 0.5] and quality["recall"].tolist() == [1.0, 0.5]
    drift = pd.DataFrame({"feature": ["amount"], "psi": [0.05]})
    thresholds = monitoring.Thresholds(min_roc_auc=0.8, max_psi=0.25, max_error_rate=0.05)
    assert monitoring.recommend(quality.head(1), drift, 0.0, thresholds) == ("keep", [])
    decision, reasons = monitoring.recommend(quality, drift.assign(psi=0.4), 0.1, thresholds)
    assert decision == "retrain" and len(reasons) == 3


def test_operations_over_time_counts_errors_and_latency() -> None:
    requests = pd.DataFrame([_payload(i, [], None, status=500 if i == 3 else 200) for i in range(10)])
    ops = monitoring.operations_over_time(requests, n_buckets=2)

    assert ops["requests"].sum() == 10 and len(ops) == 2
    assert ops["error_rate"].tolist() == [0.2, 0.0]
    assert (ops["p99_ms"] >= ops["p50_ms"]).all()
