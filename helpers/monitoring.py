"""Monitoring computations over an endpoint's inference table: unpacking, quality, drift, operations.

Pure pandas/NumPy/SciPy, the same on both backends: the notebook reads the payload table (a plain Delta
table, not a feature table) with ``spark.table(name).toPandas()`` and hands the frame over.
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
from scipy import stats
from sklearn.metrics import precision_score, recall_score, roc_auc_score

_EPSILON = 1e-4  # floor for empty bins, so PSI stays finite


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


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``.

    Numeric columns use the reference's quantile bins; other columns compare category shares. Rules of thumb:
    < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
    """
    reference, current = reference.dropna(), current.dropna()
    if reference.empty or current.empty:
        raise ValueError("psi needs non-empty reference and current values")
    if pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(reference):
        edges = np.unique(np.quantile(reference.to_numpy(float), np.linspace(0, 1, bins + 1)))
        edges[0], edges[-1] = -np.inf, np.inf
        expected = np.histogram(reference, edges)[0] / len(reference)
        actual = np.histogram(current, edges)[0] / len(current)
    else:
        levels = sorted(set(reference.astype(str)) | set(current.astype(str)))
        expected = reference.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
        actual = current.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    expected, actual = np.clip(expected, _EPSILON, None), np.clip(actual, _EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per feature: PSI, and for numeric ones the two-sample Kolmogorov-Smirnov statistic and p-value."""
    rows = []
    for column in columns:
        ref, cur = reference[column].dropna(), current[column].dropna()
        numeric = pd.api.types.is_numeric_dtype(ref) and not pd.api.types.is_bool_dtype(ref)
        row: dict[str, Any] = {"feature": column, "kind": "numeric" if numeric else "categorical"}
        row["psi"] = psi(ref, cur)
        if numeric:
            ks = stats.ks_2samp(ref.to_numpy(float), cur.to_numpy(float))
            row |= {"ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}
        else:
            row |= {"ks_statistic": np.nan, "ks_pvalue": np.nan}
        rows.append(row)
    return pd.DataFrame(rows).sort_values("psi", ascending=False, ignore_index=True)


def quality_by(frame: pd.DataFrame, by: str, *, label: str, score: str, threshold: float) -> pd.DataFrame:
    """ROC AUC and precision/recall at ``threshold`` for each value of ``by`` (rows with a label only)."""
    rows = []
    for key, group in frame.dropna(subset=[label, score]).groupby(by, sort=True):
        y, s = group[label].astype(int), group[score].astype(float)
        flagged = (s >= threshold).astype(int)
        rows.append(
            {
                by: key,
                "n_labeled": len(group),
                "positive_rate": float(y.mean()),
                "roc_auc": float(roc_auc_score(y, s)) if y.nunique() == 2 else np.nan,
                "precision": float(precision_score(y, flagged, zero_division=0)),
                "recall": float(recall_score(y, flagged, zero_division=0)),
            }
        )
    return pd.DataFrame(rows)


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
    """When the check recommends retraining."""

    min_roc_auc: float = 0.8
    max_psi: float = 0.25
    max_error_rate: float = 0.05


def recommend(
    quality: pd.DataFrame, drift: pd.DataFrame, error_rate: float, thresholds: Thresholds
) -> tuple[str, list[str]]:
    """``("retrain" | "keep", reasons)`` from the serving version's quality, feature drift and errors."""
    reasons = []
    worst_auc = quality["roc_auc"].min() if not quality.empty else np.nan
    if np.isnan(worst_auc):
        reasons.append("not enough labeled traffic to measure ROC AUC")
    elif worst_auc < thresholds.min_roc_auc:
        reasons.append(f"ROC AUC {worst_auc:.3f} is below {thresholds.min_roc_auc}")
    drifted = drift[drift["psi"] > thresholds.max_psi]
    reasons += [f"{r.feature} drifted: PSI {r.psi:.3f} > {thresholds.max_psi}" for r in drifted.itertuples()]
    if error_rate > thresholds.max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} is above {thresholds.max_error_rate:.1%}")
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


def create_or_update_monitor(w: Any, table_name: str, output_schema_name: str, **config: Any) -> Any:
    """The data-profiling monitor on ``table_name``, created or (when one exists) updated to ``config``.

    ``config`` holds ``DataProfilingConfig`` fields (``inference_log=InferenceLogConfig(...)``,
    ``baseline_table_name=...``, ``slicing_exprs=[...]``); the metric tables go to ``output_schema_name``
    (``catalog.schema``). Re-running a notebook therefore updates the monitor instead of failing with
    ``ResourceAlreadyExists``. Returns the ``Monitor``.
    """
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.dataquality import DataProfilingConfig, Monitor

    table_id = w.tables.get(table_name).table_id
    schema_id = w.schemas.get(output_schema_name).schema_id
    wanted = Monitor("table", table_id, data_profiling_config=DataProfilingConfig(schema_id, **config))
    try:
        w.data_quality.get_monitor("table", table_id)
    except NotFound:
        return w.data_quality.create_monitor(wanted)
    mask = ",".join(f"data_profiling_config.{name}" for name in sorted(config))
    return w.data_quality.update_monitor("table", table_id, wanted, update_mask=mask)
