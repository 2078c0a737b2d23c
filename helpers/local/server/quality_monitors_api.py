"""The older Lakehouse Monitoring API (``/api/2.1/unity-catalog/tables/{table_name}/monitor``), deprecated.

``w.quality_monitors`` (databricks-sdk: "Deprecated: Please use the Data Quality Monitors API instead")
names a monitor by its table's name and spells the configuration its own way (``timestamp_col``, ``"1 day"``,
``PROBLEM_TYPE_CLASSIFICATION``, refresh state ``SUCCESS``). These handlers translate both ways and leave the
work to the same ``DataProfilingMonitors`` as the current API: a monitor made with one is read by the other.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from helpers.local.server.catalog_api import schema_id, schema_name, table_id, table_name
from helpers.local.server.errors import bad_request
from helpers.local.server.limits import read_object
from helpers.local.server.monitors_api import (
    GRANULARITY_PREFIX,
    DataProfilingMonitors,
    parse_refresh_id,
    service,
)

# Old field -> new field, per analysis; the old API's settings that the new one keeps under the same name.
_COLUMNS = {
    "timestamp_col": "timestamp_column",
    "prediction_col": "prediction_column",
    "label_col": "label_column",
    "model_id_col": "model_id_column",
}
_SHARED = ("assets_dir", "baseline_table_name", "slicing_exprs", "schedule", "skip_builtin_dashboard")
_STATE_PREFIX, _TRIGGER_PREFIX, _PROBLEM_PREFIX = (
    "MONITOR_REFRESH_STATE_",
    "MONITOR_REFRESH_TRIGGER_",
    "INFERENCE_",
)


def _settings(body: dict[str, Any], output_schema: str) -> dict[str, Any]:
    """A ``DataProfilingConfig`` from an old-API body (what the current API validates)."""
    settings: dict[str, Any] = {k: body[k] for k in _SHARED if body.get(k) is not None}
    settings["output_schema_id"] = schema_id(output_schema)
    if body.get("custom_metrics"):
        settings["custom_metrics"] = body["custom_metrics"]
    for kind in ("inference_log", "time_series", "snapshot"):
        old = body.get(kind)
        if old is None:
            continue
        if not isinstance(old, dict):
            raise bad_request(f"{kind} must be an object")
        new = {_COLUMNS.get(k, k): v for k, v in old.items() if k != "prediction_proba_col"}
        if isinstance(new.get("granularities"), list):
            new["granularities"] = [
                GRANULARITY_PREFIX + g.upper().replace(" ", "_") if isinstance(g, str) else g
                for g in new["granularities"]
            ]
        if isinstance(new.get("problem_type"), str):
            new["problem_type"] = _PROBLEM_PREFIX + new["problem_type"]
        settings[kind] = new
    return settings


def _info(doc: dict[str, Any], tables_schema: str) -> dict[str, Any]:
    """``MonitorInfo`` from a monitor document."""
    config = doc["data_profiling_config"]
    info: dict[str, Any] = {k: config[k] for k in _SHARED if k in config}
    info |= {
        "table_name": config["monitored_table_name"],
        "output_schema_name": tables_schema,
        "profile_metrics_table_name": config["profile_metrics_table_name"],
        "drift_metrics_table_name": config["drift_metrics_table_name"],
        "monitor_version": config["monitor_version"],
        "status": "MONITOR_STATUS_ACTIVE",
    }
    for kind in ("inference_log", "time_series", "snapshot"):
        if kind in config:
            old = {k: config[kind][v] for k, v in _COLUMNS.items() if v in config[kind]}
            if "granularities" in config[kind]:
                old["granularities"] = [
                    g.removeprefix(GRANULARITY_PREFIX).lower().replace("_", " ")
                    for g in config[kind]["granularities"]
                ]
            if "problem_type" in config[kind]:
                old["problem_type"] = config[kind]["problem_type"].removeprefix(_PROBLEM_PREFIX)
            info[kind] = old
    return info


def _refresh_info(refresh: dict[str, Any]) -> dict[str, Any]:
    """``MonitorRefreshInfo`` from a refresh document (states without their prefix)."""
    info = {k: refresh[k] for k in ("refresh_id", "start_time_ms", "end_time_ms", "message") if k in refresh}
    info["state"] = refresh["state"].removeprefix(_STATE_PREFIX)
    info["trigger"] = refresh["trigger"].removeprefix(_TRIGGER_PREFIX)
    return info


def _table(monitors: DataProfilingMonitors, name: str) -> str:
    return table_id(monitors.tables, table_name(monitors.tables, name))


def _output_schema(monitors: DataProfilingMonitors, body: dict[str, Any]) -> str:
    name = body.get("output_schema_name")
    if not isinstance(name, str) or not name:
        raise bad_request("output_schema_name is required: the schema of the metric tables, 'catalog.schema'")
    return schema_name(monitors.tables, name)


def _schema_of(doc: dict[str, Any]) -> str:
    return doc["data_profiling_config"]["profile_metrics_table_name"].rsplit(".", 1)[0]


def _create(monitors: DataProfilingMonitors, name: str, body: dict[str, Any]) -> dict[str, Any]:
    output = _output_schema(monitors, body)
    object_id = _table(monitors, name)
    doc = monitors.create(
        {"object_type": "table", "object_id": object_id, "data_profiling_config": _settings(body, output)}
    )
    return _info(doc, output)


def _update(monitors: DataProfilingMonitors, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """A PUT replaces the settings it can change (as the old API does): absent ones are cleared."""
    output = _output_schema(monitors, body)
    object_id = _table(monitors, name)
    current = monitors.get("table", object_id)
    if output != _schema_of(current):
        raise bad_request(
            f"output_schema_name cannot be changed (the monitor writes to {_schema_of(current)})"
        )
    new = {"data_profiling_config": _settings(body, output)}
    return _info(monitors.update("table", object_id, new, "*"), output)


async def create(table_name: str, request: Request) -> dict[str, Any]:
    body = await read_object(request)
    return await run_in_threadpool(_create, service(request), table_name, body)


async def get(table_name: str, request: Request) -> dict[str, Any]:
    monitors = service(request)
    doc = await run_in_threadpool(lambda: monitors.get("table", _table(monitors, table_name)))
    return _info(doc, _schema_of(doc))


async def update(table_name: str, request: Request) -> dict[str, Any]:
    body = await read_object(request)
    return await run_in_threadpool(_update, service(request), table_name, body)


async def delete(table_name: str, request: Request) -> dict[str, Any]:
    monitors = service(request)
    return await run_in_threadpool(lambda: monitors.delete("table", _table(monitors, table_name)))


async def run_refresh(table_name: str, request: Request) -> dict[str, Any]:
    monitors = service(request)
    refresh = await run_in_threadpool(lambda: monitors.create_refresh("table", _table(monitors, table_name)))
    return _refresh_info(refresh)


async def list_refreshes(table_name: str, request: Request) -> dict[str, Any]:
    monitors = service(request)
    refreshes = await run_in_threadpool(
        lambda: monitors.list_refreshes("table", _table(monitors, table_name))
    )
    return {"refreshes": [_refresh_info(r) for r in refreshes[:25]]}  # "the most recent refreshes (up to 25)"


async def get_refresh(table_name: str, refresh_id: str, request: Request) -> dict[str, Any]:
    monitors = service(request)
    number = parse_refresh_id(refresh_id)
    refresh = await run_in_threadpool(
        lambda: monitors.get_refresh("table", _table(monitors, table_name), number)
    )
    return _refresh_info(refresh)


async def cancel_refresh(table_name: str, refresh_id: str, request: Request) -> dict[str, Any]:
    monitors = service(request)
    number = parse_refresh_id(refresh_id)
    await run_in_threadpool(lambda: monitors.cancel_refresh("table", _table(monitors, table_name), number))
    return {}
