"""What monitoring needs beyond the platform's data-profiling monitor, the same on both backends.

The monitor (``w.data_quality``) computes quality and drift into its metric tables. This module unpacks the
payload table into rows a monitor can profile, summarises operations the monitor does not see (failed
requests, latency), judges the metric-table rows against thresholds, and refreshes a monitor and waits.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd


class NotEnoughTraffic(LookupError):
    """The inference table is missing or has too few logged requests to judge the model (yet)."""


def unpack_payloads(payloads: pd.DataFrame, served_entities: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per scored record: request values, ``prediction`` and the request's metadata columns.

    ``payloads`` has the inference table's columns (``request``/``response`` JSON strings); rows of failed
    requests keep their metadata with no record values. ``served_entities`` (``served_entity_id``,
    ``served_entity_name``, ``entity_version``) names the version that answered.
    """
    meta_columns = [
        "databricks_request_id",
        "client_request_id",
        "request_time",
        "status_code",
        "execution_duration_ms",
        "served_entity_id",
    ]
    rows: list[dict[str, Any]] = []
    for meta, request, response in zip(
        payloads[meta_columns].to_dict(orient="records"),
        payloads["request"],
        payloads["response"],
        strict=True,
    ):
        records = _records(request)
        predictions = _predictions(response) if meta["status_code"] == 200 else None
        if not records or predictions is None or len(predictions) != len(records):
            rows.append(meta)
            continue
        rows.extend(meta | record | {"prediction": p} for record, p in zip(records, predictions, strict=True))
    frame = pd.DataFrame(rows)
    if "prediction" not in frame:
        frame["prediction"] = np.nan
    frame["request_time"] = pd.to_datetime(frame["request_time"], utc=True)
    if served_entities is not None:
        names = served_entities[["served_entity_id", "served_entity_name", "entity_version"]]
        frame = frame.merge(names.drop_duplicates("served_entity_id"), on="served_entity_id", how="left")
    return frame.sort_values("request_time", kind="stable").reset_index(drop=True)


def _records(request: str | None) -> list[dict[str, Any]]:
    if not request:
        return []
    body = json.loads(request)
    if "dataframe_records" in body:
        return list(body["dataframe_records"])
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        return [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
    if "instances" in body and all(isinstance(r, dict) for r in body["instances"]):
        return list(body["instances"])
    inputs = body.get("inputs")
    if isinstance(inputs, dict) and all(isinstance(v, list) for v in inputs.values()):
        return [dict(zip(inputs, values, strict=True)) for values in zip(*inputs.values(), strict=True)]
    return []


def _predictions(response: str | None) -> list[Any] | None:
    if not response:
        return None
    predictions = json.loads(response).get("predictions")
    return predictions if isinstance(predictions, list) else None


def operations_over_time(requests: pd.DataFrame, n_buckets: int = 10) -> pd.DataFrame:
    """Per time bucket: request count, error rate and latency percentiles (``execution_duration_ms``).

    ``requests`` holds one row per request (not per record): the payload table itself.
    """
    if requests.empty:
        raise ValueError("no requests to summarise")
    times = pd.to_datetime(requests["request_time"], utc=True)
    buckets = pd.cut(times, bins=max(1, min(n_buckets, len(requests))))
    grouped = requests.assign(bucket=buckets, error=requests["status_code"] != 200).groupby(
        "bucket", observed=True
    )
    latency = grouped["execution_duration_ms"]
    out = pd.DataFrame(
        {
            "start": [interval.left for interval in grouped.groups],
            "requests": grouped.size().to_numpy(),
            "error_rate": grouped["error"].mean().to_numpy(),
            "p50_ms": latency.quantile(0.5).to_numpy(),
            "p95_ms": latency.quantile(0.95).to_numpy(),
            "p99_ms": latency.quantile(0.99).to_numpy(),
        }
    )
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class Thresholds:
    """When the check recommends retraining (a job run with ``fail_on_threshold`` then fails)."""

    min_f1_score: float = 0.3  # of the positive class, on the labelled rows
    max_psi: float = 0.25  # numeric features against the baseline
    max_js_distance: float = 0.1  # categorical features against the baseline
    max_error_rate: float = 0.05


class ThresholdCrossed(RuntimeError):
    """A monitoring threshold was crossed: the message names each metric, value, threshold and version."""


def recommend(
    quality: pd.DataFrame,
    drift: pd.DataFrame,
    error_rate: float,
    thresholds: Thresholds,
    *,
    version: str,
    positive_class: str = "1",
) -> tuple[str, list[str]]:
    """``("retrain" | "keep", reasons)`` from rows of the monitor's metric tables and the error rate.

    ``quality`` holds ``_profile_metrics`` rows (``column_name = ':table'``) of ``version``: the newest
    window with an ``f1_score`` is judged. ``drift`` holds ``_drift_metrics`` rows of the features:
    ``population_stability_index`` for numeric ones, ``js_distance`` for categorical ones (rows of
    ``model_version = '*'`` are every version's requests together). Each reason names
    the metric, its value, the threshold and the version. Without labelled rows of ``positive_class`` yet
    (late labels) F1 is not judged.
    """
    reasons = []
    scored = quality.dropna(subset=["f1_score"]) if "f1_score" in quality else quality.iloc[0:0]
    has_class = np.array([positive_class in (f["one_vs_all"] or {}) for f in scored["f1_score"]], dtype=bool)
    scored = scored.loc[has_class]
    if not scored.empty:
        newest = scored.sort_values("window", key=lambda w: w.map(lambda x: x["start"])).iloc[-1]
        f1 = float(newest["f1_score"]["one_vs_all"][positive_class])
        if f1 < thresholds.min_f1_score:
            reasons.append(
                f"f1_score of class {positive_class} is {f1:.3f} < min_f1_score {thresholds.min_f1_score} "
                f"(version {version}, window from {newest['window']['start']:%Y-%m-%d %H:%M})"
            )
    for row in drift.itertuples():
        rows_of = getattr(row, "model_version", version)
        whose = "requests to every version" if rows_of == "*" else f"version {rows_of}"
        for metric, limit, name in (
            ("population_stability_index", thresholds.max_psi, "max_psi"),
            ("js_distance", thresholds.max_js_distance, "max_js_distance"),
        ):
            value = getattr(row, metric, None)
            if value is not None and not pd.isna(value) and value > limit:
                reasons.append(f"{row.column_name} drifted: {metric} {value:.3f} > {name} {limit} ({whose})")
    if error_rate > thresholds.max_error_rate:
        limit = thresholds.max_error_rate
        reasons.append(f"error rate {error_rate:.1%} > max_error_rate {limit:.1%} (version {version})")
    return ("retrain" if reasons else "keep"), reasons


# Data profiling monitors (``w.data_quality``) -----------------------------------------------------------
_REFRESH_STAGE = {"MONITOR_REFRESH_STATE_PENDING": 0, "MONITOR_REFRESH_STATE_RUNNING": 1}
_REFRESH_DONE = 2


def refresh_monitor(
    w: Any,
    table_name: str,
    timeout: timedelta = timedelta(minutes=30),
    *,
    max_poll_seconds: float = 10.0,
    progress: bool = True,
) -> Any:
    """Refresh the data-profiling monitor on ``table_name``, wait for it (with a progress bar), return it.

    ``w`` is a ``WorkspaceClient``. The refresh recomputes the monitor's ``_profile_metrics`` and
    ``_drift_metrics`` tables; on Databricks it runs on serverless compute and takes minutes. Raises
    ``RuntimeError`` with the refresh's message if it fails or is cancelled, ``TimeoutError`` after
    ``timeout`` (the refresh keeps running).
    """
    from databricks.sdk.service.dataquality import Refresh

    table_id = w.tables.get(table_name).table_id
    refresh = w.data_quality.create_refresh("table", table_id, Refresh("table", table_id))
    done = wait_for_refresh(
        w, table_id, refresh.refresh_id, timeout, max_poll_seconds=max_poll_seconds, progress=progress
    )
    if done.state is None or done.state.value != "MONITOR_REFRESH_STATE_SUCCESS":
        state = done.state.value if done.state else "UNKNOWN"
        raise RuntimeError(f"monitor refresh {done.refresh_id} on {table_name}: {state}, {done.message}")
    return done


def wait_for_refresh(
    w: Any,
    table_id: str,
    refresh_id: int,
    timeout: timedelta = timedelta(minutes=30),
    *,
    max_poll_seconds: float = 10.0,
    progress: bool = True,
) -> Any:
    """Poll a monitor refresh until it is no longer PENDING or RUNNING and return it (a ``Refresh``).

    Polls back off from 0.25 s to ``max_poll_seconds``; a text progress bar shows the state. Raises
    ``TimeoutError`` after ``timeout``; the refresh keeps running (``w.data_quality.cancel_refresh``
    stops it).
    """
    from tqdm import tqdm

    if timeout <= timedelta(0):
        raise ValueError(f"timeout must be positive, got {timeout}")
    deadline = time.monotonic() + timeout.total_seconds()
    delay = 0.25
    bar = tqdm(
        total=_REFRESH_DONE,
        disable=not progress,
        file=sys.stdout,  # a plain text bar: it also reads well in an executed notebook
        bar_format="{desc} |{bar}| [{elapsed}]",
    )
    try:
        while True:
            refresh = w.data_quality.get_refresh("table", table_id, refresh_id)
            state = refresh.state.value if refresh.state else "MONITOR_REFRESH_STATE_UNKNOWN"
            bar.set_description_str(f"refresh {refresh_id}: {state.removeprefix('MONITOR_REFRESH_STATE_')}")
            bar.update(_REFRESH_STAGE.get(state, _REFRESH_DONE) - bar.n)
            if state not in _REFRESH_STAGE:
                return refresh
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"refresh {refresh_id} is still {state} after {timeout}; it keeps running "
                    "(w.data_quality.cancel_refresh stops it)"
                )
            time.sleep(delay)
            delay = min(max_poll_seconds, delay * 1.5)
    finally:
        bar.close()
