"""databricks-sdk's ``w.data_quality`` against the local data-quality API: monitors, refreshes, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from databricks.sdk.service import catalog
from databricks.sdk.service.dataquality import (
    AggregationGranularity,
    DataProfilingConfig,
    DataProfilingStatus,
    InferenceLogConfig,
    InferenceProblemType,
    Monitor,
    Refresh,
    RefreshState,
    SnapshotConfig,
    TimeSeriesConfig,
)
from deltalake import write_deltalake
from jobs_server import JobsServer, serve_jobs
from polling import wait_for

from helpers import monitoring
from helpers.local.server.monitor_store import RUNNING, MonitorStore
from helpers.local.server.monitors_api import DataProfilingMonitors
from helpers.local.spark import LocalSparkSession
from helpers.local.tables import DeltaTables

SCHEMA = "main.monitoring"
DONE = (RefreshState.MONITOR_REFRESH_STATE_SUCCESS, RefreshState.MONITOR_REFRESH_STATE_FAILED)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsServer]:
    with serve_jobs(tmp_path_factory.mktemp("monitor-state")) as running:
        yield running


@pytest.fixture(scope="module")
def w(server: JobsServer) -> WorkspaceClient:
    return server.client()


def write_table(state_dir: Path, name: str, frame: pd.DataFrame) -> None:
    path = DeltaTables(state_dir).path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(path), arrow(frame), mode="overwrite")


def arrow(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as Arrow, UTC timestamps as Delta's ``TIMESTAMP`` (not through pandas' ``.values``)."""
    columns = {}
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            columns[name] = pa.array(series.dt.tz_convert(None).to_numpy(), pa.timestamp("us")).cast(
                pa.timestamp("us", tz="UTC")
            )
        else:
            columns[name] = pa.array(series.to_numpy())
    return pa.table(columns)


def inference_log(seed: int = 0, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 3 * 86_400, n), unit="s")
    label = rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "request_time": stamps,
            "amount": rng.normal(50, 10, n) + 15 * (stamps >= pd.Timestamp("2026-11-03", tz="UTC")),
            "channel": rng.choice(["web", "store", "app"], n),
            "model_version": rng.choice(["1", "2"], n),
            "prediction": np.where(rng.random(n) < 0.8, label, 1 - label),
            "label": label,
        }
    )


def log_config(**overrides: object) -> InferenceLogConfig:
    settings = {
        "problem_type": InferenceProblemType.INFERENCE_PROBLEM_TYPE_CLASSIFICATION,
        "timestamp_column": "request_time",
        "granularities": [AggregationGranularity.AGGREGATION_GRANULARITY_1_DAY],
        "prediction_column": "prediction",
        "model_id_column": "model_version",
        "label_column": "label",
    } | overrides
    return InferenceLogConfig(**settings)  # type: ignore[arg-type]


def monitor_of(w: WorkspaceClient, table: str, **config: object) -> Monitor:
    return Monitor(
        object_type="table",
        object_id=w.tables.get(table).table_id,
        data_profiling_config=DataProfilingConfig(output_schema_id=w.schemas.get(SCHEMA).schema_id, **config),
    )


def finished(w: WorkspaceClient, refresh: Refresh) -> Refresh:
    def done() -> bool:
        return w.data_quality.get_refresh("table", refresh.object_id, refresh.refresh_id).state in DONE

    wait_for(done, f"refresh {refresh.refresh_id}")
    return w.data_quality.get_refresh("table", refresh.object_id, refresh.refresh_id)


def test_an_inference_log_monitor_is_created_refreshed_read_updated_and_deleted(
    server: JobsServer, w: WorkspaceClient
) -> None:
    table, baseline = f"{SCHEMA}.scored", f"{SCHEMA}.training"
    write_table(server.state_dir, table, inference_log())
    write_table(server.state_dir, baseline, inference_log(seed=1).drop(columns=["request_time"]))

    created = w.data_quality.create_monitor(
        monitor_of(
            w, table, inference_log=log_config(), baseline_table_name=baseline, slicing_exprs=["channel"]
        )
    )
    config = created.data_profiling_config
    assert config.monitored_table_name == table
    assert config.profile_metrics_table_name == f"{SCHEMA}.scored_profile_metrics"
    assert config.drift_metrics_table_name == f"{SCHEMA}.scored_drift_metrics"
    assert config.status == DataProfilingStatus.DATA_PROFILING_STATUS_ACTIVE
    assert w.data_quality.get_monitor("table", created.object_id).data_profiling_config == config
    assert [m.object_id for m in w.data_quality.list_monitor()] == [created.object_id]

    refresh = w.data_quality.create_refresh("table", created.object_id, Refresh("table", created.object_id))
    assert refresh.state == RefreshState.MONITOR_REFRESH_STATE_PENDING and refresh.refresh_id
    done = finished(w, refresh)
    assert done.state == RefreshState.MONITOR_REFRESH_STATE_SUCCESS, done.message
    assert done.end_time_ms >= done.start_time_ms
    assert [r.refresh_id for r in w.data_quality.list_refresh("table", created.object_id)] == [
        refresh.refresh_id
    ]

    spark = LocalSparkSession(server.state_dir)
    profile = spark.table(config.profile_metrics_table_name).toPandas()
    drift = spark.table(config.drift_metrics_table_name).toPandas()
    whole = profile[
        (profile.column_name == ":table") & profile.slice_key.isna() & (profile.log_type == "INPUT")
    ]
    assert sorted(whole.model_version.unique()) == ["*", "1", "2"]
    assert len(whole[whole.model_version == "*"]) == 3  # three days
    assert whole.accuracy_score.between(0.7, 0.9).all()
    amount = drift[(drift.column_name == "amount") & drift.slice_key.isna() & (drift.model_version == "*")]
    assert set(amount.drift_type) == {"CONSECUTIVE", "BASELINE"}
    jump = amount[(amount.drift_type == "CONSECUTIVE") & (amount.window.map(lambda w: w["start"].day) == 3)]
    assert jump.ks_test.iloc[0]["pvalue"] < 1e-6  # the shift on 3 November

    updated = w.data_quality.update_monitor(
        "table",
        created.object_id,
        Monitor(
            "table",
            created.object_id,
            data_profiling_config=DataProfilingConfig("", slicing_exprs=["amount > 50"]),
        ),
        update_mask="data_profiling_config.slicing_exprs",
    )
    assert updated.data_profiling_config.slicing_exprs == ["amount > 50"]
    assert updated.data_profiling_config.monitor_version == 1
    assert updated.data_profiling_config.baseline_table_name == baseline  # not in the mask: kept

    w.data_quality.delete_monitor("table", created.object_id)
    with pytest.raises(ResourceDoesNotExist, match="create one"):
        w.data_quality.get_monitor("table", created.object_id)
    assert spark.table(config.profile_metrics_table_name).count() == len(profile)  # the tables stay


def test_time_series_and_snapshot_monitors_profile_without_model_quality(
    server: JobsServer, w: WorkspaceClient
) -> None:
    for name, analysis in (
        (
            "events",
            {
                "time_series": TimeSeriesConfig(
                    "request_time", [AggregationGranularity.AGGREGATION_GRANULARITY_1_HOUR]
                )
            },
        ),
        ("snap", {"snapshot": SnapshotConfig()}),
    ):
        table = f"{SCHEMA}.{name}"
        write_table(server.state_dir, table, inference_log(n=200))
        created = w.data_quality.create_monitor(monitor_of(w, table, **analysis))
        done = monitoring.refresh_monitor(
            w, table, max_poll_seconds=0.1, progress=False
        )  # the notebook's call
        assert done.state == RefreshState.MONITOR_REFRESH_STATE_SUCCESS
        profile = LocalSparkSession(server.state_dir).table(
            created.data_profiling_config.profile_metrics_table_name
        )
        rows = profile.toPandas()
        assert "accuracy_score" in rows and rows.accuracy_score.isna().all()
        assert rows[rows.column_name == ":table"]["count"].max() <= 200


def test_a_notebook_rerun_updates_the_monitor_it_created(server: JobsServer, w: WorkspaceClient) -> None:
    """Notebook 07's cell: create the monitor; on a re-run ``ResourceAlreadyExists``, then update it."""

    def create_or_update(**config: object) -> Monitor:
        wanted = monitor_of(w, table, **config)
        try:
            return w.data_quality.create_monitor(wanted)
        except ResourceAlreadyExists:
            mask = ",".join(f"data_profiling_config.{name}" for name in sorted(config))
            return w.data_quality.update_monitor("table", wanted.object_id, wanted, update_mask=mask)

    table = f"{SCHEMA}.rerun"
    write_table(server.state_dir, table, inference_log(n=100))
    first = create_or_update(inference_log=log_config())
    again = create_or_update(inference_log=log_config(), slicing_exprs=["channel"])
    assert again.object_id == first.object_id
    assert again.data_profiling_config.slicing_exprs == ["channel"]
    assert again.data_profiling_config.monitor_version == first.data_profiling_config.monitor_version + 1
    assert again.data_profiling_config.profile_metrics_table_name == f"{SCHEMA}.rerun_profile_metrics"


def test_errors_are_databricks_errors_naming_what_is_wrong(server: JobsServer, w: WorkspaceClient) -> None:
    table, empty = f"{SCHEMA}.checked", f"{SCHEMA}.empty"
    write_table(server.state_dir, table, inference_log(n=50))
    write_table(server.state_dir, empty, inference_log(n=50).iloc[:0])

    with pytest.raises(ResourceDoesNotExist, match="does not exist"):
        w.tables.get(f"{SCHEMA}.missing")
    unknown = monitor_of(w, table, inference_log=log_config())
    unknown.object_id = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ResourceDoesNotExist, match="table_id"):
        w.data_quality.create_monitor(unknown)
    with pytest.raises(InvalidParameterValue, match="label_column 'churned' is not a column"):
        w.data_quality.create_monitor(monitor_of(w, table, inference_log=log_config(label_column="churned")))
    with pytest.raises(InvalidParameterValue, match="'segment', which is not a column"):
        w.data_quality.create_monitor(
            monitor_of(w, table, inference_log=log_config(), slicing_exprs=["segment = 'a'"])
        )
    with pytest.raises(InvalidParameterValue, match="Exactly one Analysis Configuration"):
        w.data_quality.create_monitor(
            monitor_of(w, table, inference_log=log_config(), snapshot=SnapshotConfig())
        )
    with pytest.raises(ResourceDoesNotExist, match="training_missing"):
        w.data_quality.create_monitor(
            monitor_of(w, table, inference_log=log_config(), baseline_table_name=f"{SCHEMA}.training_missing")
        )

    first = w.data_quality.create_monitor(monitor_of(w, table, inference_log=log_config()))
    with pytest.raises(ResourceAlreadyExists, match="already has a data profiling monitor"):
        w.data_quality.create_monitor(monitor_of(w, table, inference_log=log_config()))
    with pytest.raises(ResourceDoesNotExist):
        w.data_quality.get_refresh("table", first.object_id, 999_999)
    with pytest.raises(InvalidParameterValue, match="refresh_id must be an integer"):
        w.api_client.do("GET", f"/api/data-quality/v1/monitors/table/{first.object_id}/refreshes/latest")
    with pytest.raises(InvalidParameterValue, match="update_mask is required"):
        w.data_quality.update_monitor("table", first.object_id, first, update_mask="")
    with pytest.raises(InvalidParameterValue, match="cannot be updated"):
        w.data_quality.update_monitor(
            "table", first.object_id, first, "data_profiling_config.output_schema_id"
        )

    on_empty = w.data_quality.create_monitor(monitor_of(w, empty, snapshot=SnapshotConfig()))
    refresh = w.data_quality.create_refresh("table", on_empty.object_id, Refresh("table", on_empty.object_id))
    failed = finished(w, refresh)
    assert failed.state == RefreshState.MONITOR_REFRESH_STATE_FAILED
    assert "has no rows to profile" in failed.message
    with pytest.raises(RuntimeError, match="FAILED, The monitored table main.monitoring.empty has no rows"):
        monitoring.refresh_monitor(w, empty, max_poll_seconds=0.1, progress=False)


def test_a_refresh_left_active_by_a_stopped_server_is_failed_with_a_reason(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path)
    running = store.add_refresh("t-1", {"object_type": "table", "object_id": "t-1", "state": RUNNING})
    store.close()

    DataProfilingMonitors(tmp_path).close()  # what the next server does when it starts

    store = MonitorStore(tmp_path)
    after = store.refresh("t-1", running["refresh_id"])
    store.close()
    assert after["state"] == "MONITOR_REFRESH_STATE_FAILED"
    assert "stopped while this refresh was active" in after["message"]


WRONG = (None, 0, -1, 1.5, "", "x", True, [], [1], {}, {"a": 1})


def leaves(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, (*path, k))] + ([path] if path else [])
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))] + [path]
    return [path]


def replaced(value: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)  # type: ignore[call-overload]
    copy[path[0]] = replaced(copy[path[0]], path[1:], new)
    return copy


def test_every_field_of_a_create_with_every_wrong_type_gets_a_4xx_or_a_monitor(
    server: JobsServer, w: WorkspaceClient
) -> None:
    table = f"{SCHEMA}.fuzzed"
    write_table(server.state_dir, table, inference_log(n=50))
    valid = monitor_of(
        w,
        table,
        inference_log=log_config(),
        baseline_table_name=table,
        slicing_exprs=["channel", "amount > 1"],
        assets_dir="/Workspace/x",
    ).as_dict()
    url = f"{server.url}/api/data-quality/v1/monitors"
    headers = {"Authorization": f"Bearer {server.token}"}
    tried = 0
    for path in leaves(valid):
        for wrong in WRONG:
            answer = requests.post(url, json=replaced(valid, path, wrong), headers=headers, timeout=30)
            tried += 1
            if answer.status_code == 200:  # a value the API takes (an empty assets_dir, ...): start again
                w.data_quality.delete_monitor("table", valid["object_id"])
                continue
            assert 400 <= answer.status_code < 500, (path, wrong, answer.text)
            assert set(answer.json()) == {"error_code", "message"}, answer.text
    assert tried > 100

    created = w.data_quality.create_monitor(monitor_of(w, table, inference_log=log_config()))
    for path in leaves(valid["data_profiling_config"]):
        for wrong in WRONG:
            body = {**valid, "data_profiling_config": replaced(valid["data_profiling_config"], path, wrong)}
            answer = requests.patch(
                f"{url}/table/{created.object_id}",
                params={"update_mask": "*"},
                json=body,
                headers=headers,
                timeout=30,
            )
            assert answer.status_code == 200 or 400 <= answer.status_code < 500, (path, wrong, answer.text)


def test_the_deprecated_quality_monitors_api_serves_the_same_monitors(
    server: JobsServer, w: WorkspaceClient
) -> None:
    table = f"{SCHEMA}.legacy"
    write_table(server.state_dir, table, inference_log(n=300))
    info = w.quality_monitors.create(
        table_name=table,
        output_schema_name=SCHEMA,
        assets_dir="/Workspace/Users/me/monitoring",
        inference_log=catalog.MonitorInferenceLog(
            problem_type=catalog.MonitorInferenceLogProblemType.PROBLEM_TYPE_CLASSIFICATION,
            timestamp_col="request_time",
            granularities=["1 day"],
            prediction_col="prediction",
            model_id_col="model_version",
            label_col="label",
        ),
    )
    assert info.status == catalog.MonitorInfoStatus.MONITOR_STATUS_ACTIVE
    assert info.drift_metrics_table_name == f"{SCHEMA}.legacy_drift_metrics"
    assert info.inference_log.granularities == ["1 day"] and info.inference_log.label_col == "label"
    current = w.data_quality.get_monitor("table", w.tables.get(table).table_id).data_profiling_config
    assert current.inference_log.granularities == [AggregationGranularity.AGGREGATION_GRANULARITY_1_DAY]

    refresh = w.quality_monitors.run_refresh(table)
    assert refresh.state == catalog.MonitorRefreshInfoState.PENDING

    def done() -> bool:
        state = w.quality_monitors.get_refresh(table, refresh.refresh_id).state
        return state not in (catalog.MonitorRefreshInfoState.PENDING, catalog.MonitorRefreshInfoState.RUNNING)

    wait_for(done, "the legacy refresh")
    assert (
        w.quality_monitors.get_refresh(table, refresh.refresh_id).state
        == catalog.MonitorRefreshInfoState.SUCCESS
    )
    assert [r.refresh_id for r in w.quality_monitors.list_refreshes(table).refreshes] == [refresh.refresh_id]

    updated = w.quality_monitors.update(
        table, SCHEMA, inference_log=info.inference_log, slicing_exprs=["channel"]
    )
    assert updated.slicing_exprs == ["channel"] and updated.monitor_version == 1
    with pytest.raises(ResourceAlreadyExists):
        w.quality_monitors.create(
            table_name=table, output_schema_name=SCHEMA, assets_dir="/x", snapshot=catalog.MonitorSnapshot()
        )
    w.quality_monitors.delete(table)
    with pytest.raises(ResourceDoesNotExist):
        w.quality_monitors.get(table)
