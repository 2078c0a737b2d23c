"""Data-quality API handlers (``/api/data-quality/v1/monitors``; the routes are in ``app.py``).

``w.data_quality`` (databricks-sdk) speaks this API: a ``table`` monitor with a ``data_profiling_config``
(exactly one of ``inference_log``, ``time_series``, ``snapshot``), its refreshes and their states. A refresh
runs off the request path in one worker thread (``PENDING`` -> ``RUNNING`` -> ``SUCCESS`` / ``FAILED``;
``CANCELED`` when cancelled first) and writes the metric tables through ``helpers.local.data_profiling``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from helpers.local import data_profiling
from helpers.local.data_profiling import ProfileConfig, ProfilingError
from helpers.local.frames import to_pandas
from helpers.local.server.catalog_api import schema_by_id, table_by_id, table_name
from helpers.local.server.errors import already_exists, bad_request, not_found, unavailable
from helpers.local.server.limits import read_object
from helpers.local.server.monitor_store import CANCELED, FAILED, PENDING, RUNNING, SUCCESS, MonitorStore
from helpers.local.tables import DeltaTables, TableNotFoundError

log = logging.getLogger(__name__)

ACTIVE = "DATA_PROFILING_STATUS_ACTIVE"
MANUAL = "MONITOR_REFRESH_TRIGGER_MANUAL"
ANALYSES = ("inference_log", "time_series", "snapshot")
GRANULARITY_PREFIX = "AGGREGATION_GRANULARITY_"
PROBLEM_TYPES = {
    "INFERENCE_PROBLEM_TYPE_CLASSIFICATION": "classification",
    "INFERENCE_PROBLEM_TYPE_REGRESSION": "regression",
}
# Fields a client sets; the others of DataProfilingConfig are set by the service (and ignored on input).
SETTABLE = (
    "output_schema_id",
    "assets_dir",
    "baseline_table_name",
    "custom_metrics",
    "inference_log",
    "notification_settings",
    "schedule",
    "skip_builtin_dashboard",
    "slicing_exprs",
    "snapshot",
    "time_series",
    "warehouse_id",
)
UPDATABLE = tuple(f for f in SETTABLE if f != "output_schema_id")
FIELD_TYPES = {
    "output_schema_id": str,
    "assets_dir": str,
    "baseline_table_name": str,
    "custom_metrics": list,
    "notification_settings": dict,
    "schedule": dict,
    "skip_builtin_dashboard": bool,
    "warehouse_id": str,
}
STOPPED = "The workspace server stopped while this refresh was active; run another refresh."


class DataProfilingMonitors:
    """Monitors and refreshes over the workspace's Delta tables; one worker thread runs the refreshes."""

    def __init__(self, state_dir: Path) -> None:
        self.tables = DeltaTables(state_dir)
        self._store = MonitorStore(state_dir)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-profiling")
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        for refresh in self._store.active_refreshes():  # left active by a stopped server
            self._finish(refresh, FAILED, STOPPED)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        for refresh in self._store.active_refreshes():
            self._finish(refresh, FAILED, STOPPED)
        self._store.close()

    # Monitors ----------------------------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        object_id = _object(body.get("object_type"), body.get("object_id"))
        table = table_by_id(self.tables, object_id)
        raw = body.get("data_profiling_config")
        if not isinstance(raw, dict):
            raise bad_request("data_profiling_config is required for a table monitor (an object)")
        if "output_schema_id" not in raw:
            raise bad_request("data_profiling_config.output_schema_id is required")
        settings = {k: v for k, v in raw.items() if k in SETTABLE}
        if not isinstance(settings["output_schema_id"], str):
            raise bad_request("data_profiling_config.output_schema_id must be a string (a schema id)")
        output_schema = schema_by_id(self.tables, settings["output_schema_id"])
        self._check(table, settings)
        short = table.split(".")[-1]
        doc = {
            "object_type": "table",
            "object_id": object_id,
            "data_profiling_config": settings
            | {
                "monitored_table_name": table,
                "profile_metrics_table_name": f"{output_schema}.{short}_profile_metrics",
                "drift_metrics_table_name": f"{output_schema}.{short}_drift_metrics",
                "status": ACTIVE,
                "monitor_version": 0,
            },
        }
        if not self._store.add_monitor(object_id, doc):
            raise already_exists(
                f"Table {table} already has a data profiling monitor; update it with "
                "w.data_quality.update_monitor or delete it first."
            )
        return doc

    def get(self, object_type: Any, object_id: Any) -> dict[str, Any]:
        object_id = _object(object_type, object_id)
        doc = self._store.monitor(object_id)
        if doc is None:
            raise not_found(
                f"Cannot find a data profiling monitor on the table with id '{object_id}'; "
                "create one with w.data_quality.create_monitor."
            )
        return doc

    def list(self) -> dict[str, Any]:
        return {"monitors": self._store.monitors()}

    def update(
        self, object_type: Any, object_id: Any, body: dict[str, Any], mask: str | None
    ) -> dict[str, Any]:
        doc = self.get(object_type, object_id)
        if not mask:
            raise bad_request("update_mask is required, for example 'data_profiling_config.slicing_exprs'")
        new = body.get("data_profiling_config") or {}
        if not isinstance(new, dict):
            raise bad_request("data_profiling_config must be an object")
        config = dict(doc["data_profiling_config"])
        for path in (p.strip() for p in mask.split(",")):
            if path in ("*", "data_profiling_config"):
                fields = UPDATABLE
            elif path.startswith("data_profiling_config.") and path.split(".")[1] in UPDATABLE:
                fields = (path.split(".")[1],)
            else:
                raise bad_request(
                    f"update_mask path {path!r} cannot be updated; updatable: {list(UPDATABLE)}"
                )
            for name in fields:
                if name in new:
                    config[name] = new[name]
                else:
                    config.pop(name, None)
        self._check(config["monitored_table_name"], config)
        config["monitor_version"] = int(config.get("monitor_version", 0)) + 1
        doc["data_profiling_config"] = config
        self._store.save_monitor(doc["object_id"], doc)
        return doc

    def delete(self, object_type: Any, object_id: Any) -> dict[str, Any]:
        """The monitor goes; its metric tables stay (as on Databricks)."""
        doc = self.get(object_type, object_id)
        self._store.delete_monitor(doc["object_id"])
        return {}

    def _check(self, table: str, settings: dict[str, Any]) -> None:
        for name, kind in FIELD_TYPES.items():
            if settings.get(name) is not None and not isinstance(settings[name], kind):
                raise bad_request(f"data_profiling_config.{name} must be a {kind.__name__}")
        config = profile_config(settings)
        if settings.get("custom_metrics"):
            raise bad_request(
                "custom_metrics are not computed by the local workspace; remove them to profile here"
            )
        baseline = settings.get("baseline_table_name")
        if baseline:
            table_name(self.tables, baseline)
        columns = pa.schema(self.tables.any_delta(table).schema().to_arrow()).names
        try:
            data_profiling.check_columns(config, columns, table, _field_names(config))
        except ProfilingError as exc:
            raise bad_request(str(exc)) from None

    # Refreshes ---------------------------------------------------------------------------------------------
    def create_refresh(self, object_type: Any, object_id: Any) -> dict[str, Any]:
        doc = self.get(object_type, object_id)
        refresh = self._store.add_refresh(
            doc["object_id"],
            {
                "object_type": "table",
                "object_id": doc["object_id"],
                "state": PENDING,
                "start_time_ms": _now_ms(),
                "trigger": MANUAL,
            },
        )
        self._worker.submit(self._run, refresh)
        return refresh

    def get_refresh(self, object_type: Any, object_id: Any, refresh_id: int) -> dict[str, Any]:
        object_id = _object(object_type, object_id)
        refresh = self._store.refresh(object_id, refresh_id)
        if refresh is None:
            raise not_found(f"Refresh {refresh_id} of the monitor on table id '{object_id}' does not exist.")
        return refresh

    def list_refreshes(self, object_type: Any, object_id: Any) -> list[dict[str, Any]]:
        return self._store.refreshes(self.get(object_type, object_id)["object_id"])

    def cancel_refresh(self, object_type: Any, object_id: Any, refresh_id: int) -> dict[str, Any]:
        refresh = self.get_refresh(object_type, object_id, refresh_id)
        if refresh["state"] in (PENDING, RUNNING):
            with self._lock:
                self._cancelled.add(refresh_id)
            if refresh["state"] == PENDING:
                refresh = self._finish(refresh, CANCELED, "Cancelled before it started.")
        return {"refresh": refresh}

    def _run(self, refresh: dict[str, Any]) -> None:
        if self._take_cancel(refresh["refresh_id"]):
            return
        refresh = refresh | {"state": RUNNING}
        self._store.save_refresh(refresh)
        try:
            monitor = self._store.monitor(refresh["object_id"])
            if monitor is None:
                raise ProfilingError("the monitor was deleted before this refresh ran")
            config = monitor["data_profiling_config"]
            table = config["monitored_table_name"]
            delta = self.tables.any_delta(table)
            data = to_pandas(self.tables.read_any(table))
            if data.empty:
                raise ProfilingError(
                    f"The monitored table {table} has no rows to profile; write rows to it, then refresh."
                )
            baseline_name = config.get("baseline_table_name")
            baseline = to_pandas(self.tables.read_any(baseline_name)) if baseline_name else None
            metrics = data_profiling.profile(
                data,
                profile_config(config),
                baseline=baseline,
                monitor_version=int(config.get("monitor_version", 0)),
                table_version=delta.version(),
            )
            if self._take_cancel(refresh["refresh_id"]):
                self._finish(
                    refresh, CANCELED, "Cancelled while running; the metric tables were not written."
                )
                return
            names = (config["profile_metrics_table_name"], config["drift_metrics_table_name"])
            data_profiling.write_metric_tables(self.tables, names, metrics)
        except (ProfilingError, TableNotFoundError) as exc:
            self._finish(refresh, FAILED, str(exc))
            return
        except Exception as exc:
            log.exception("refresh %s failed", refresh["refresh_id"])
            self._finish(refresh, FAILED, f"{type(exc).__name__}: {exc}")
            return
        self._finish(refresh, SUCCESS, None)

    def _take_cancel(self, refresh_id: int) -> bool:
        with self._lock:
            if refresh_id in self._cancelled:
                self._cancelled.discard(refresh_id)
                return True
        return False

    def _finish(self, refresh: dict[str, Any], state: str, message: str | None) -> dict[str, Any]:
        refresh = refresh | {"state": state, "end_time_ms": _now_ms()}
        if message:
            refresh["message"] = message
        self._store.save_refresh(refresh)
        return refresh


def profile_config(settings: dict[str, Any]) -> ProfileConfig:
    """The domain configuration of a ``DataProfilingConfig``; 400 naming the field that is wrong."""
    present = [name for name in ANALYSES if settings.get(name) is not None]
    if len(present) != 1:
        raise bad_request(
            f"Exactly one Analysis Configuration must be present (one of {', '.join(ANALYSES)}); "
            f"got {present or 'none'}"
        )
    [kind] = present
    analysis = settings[kind]
    if not isinstance(analysis, dict):
        raise bad_request(f"data_profiling_config.{kind} must be an object")
    slicing = settings.get("slicing_exprs") or []
    if not isinstance(slicing, list) or not all(isinstance(s, str) for s in slicing):
        raise bad_request("data_profiling_config.slicing_exprs must be a list of strings")
    try:
        for expr in slicing:
            data_profiling.parse_slice(expr)
    except ProfilingError as exc:
        raise bad_request(str(exc)) from None
    if kind == "snapshot":
        return ProfileConfig("snapshot", slicing_exprs=tuple(slicing))
    where = f"data_profiling_config.{kind}"
    common = {
        "timestamp_col": _required(analysis, "timestamp_column", where),
        "granularities": _granularities(analysis.get("granularities"), where),
        "slicing_exprs": tuple(slicing),
    }
    if kind == "time_series":
        return ProfileConfig("time_series", **common)
    problem = analysis.get("problem_type")
    if not isinstance(problem, str) or problem not in PROBLEM_TYPES:
        raise bad_request(f"{where}.problem_type must be one of {list(PROBLEM_TYPES)}, got {problem!r}")
    return ProfileConfig(
        "inference_log",
        problem_type=PROBLEM_TYPES[problem],
        prediction_col=_required(analysis, "prediction_column", where),
        model_id_col=_required(analysis, "model_id_column", where),
        label_col=analysis.get("label_column") or None,
        **common,
    )


def _field_names(config: ProfileConfig) -> dict[str, str]:
    where = f"data_profiling_config.{config.kind}"
    return {
        "timestamp_col": f"{where}.timestamp_column",
        "prediction_col": f"{where}.prediction_column",
        "label_col": f"{where}.label_column",
        "model_id_col": f"{where}.model_id_column",
    }


def _granularities(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise bad_request(f"{where}.granularities must list at least one AggregationGranularity")
    names = []
    for value in raw:
        text = str(value).removeprefix(GRANULARITY_PREFIX).lower().replace("_", " ")
        if not isinstance(value, str) or text not in data_profiling.GRANULARITIES:
            choices = [GRANULARITY_PREFIX + g.upper().replace(" ", "_") for g in data_profiling.GRANULARITIES]
            raise bad_request(f"{where}.granularities: {value!r} is not one of {choices}")
        names.append(text)
    return tuple(names)


def _required(analysis: dict[str, Any], name: str, where: str) -> str:
    value = analysis.get(name)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{where}.{name} is required (a column name)")
    return value


def _object(object_type: Any, object_id: Any) -> str:
    if object_type == "schema":
        raise bad_request(
            "Schema monitors (anomaly detection) are not served by the local workspace; monitor a table "
            "with a data_profiling_config."
        )
    if object_type != "table":
        raise bad_request(f"object_type must be 'table' or 'schema', got {object_type!r}")
    if not isinstance(object_id, str) or not object_id:
        raise bad_request("object_id is required: the table's id (w.tables.get(full_name).table_id)")
    return object_id


def _now_ms() -> int:
    return int(time.time() * 1000)


# Handlers --------------------------------------------------------------------------------------------------
def service(request: Request) -> DataProfilingMonitors:
    monitors: DataProfilingMonitors | None = getattr(request.app.state, "monitors", None)
    if monitors is None:
        raise unavailable("The data profiling service is not running.")
    return monitors


def parse_refresh_id(raw: str) -> int:
    """A refresh id from a URL; 400 when it is not one."""
    if not raw.isdigit() or len(raw) > 18:
        raise bad_request(f"refresh_id must be an integer, got {raw[:100]!r}")
    return int(raw)


def _page(request: Request, items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``page_size`` of ``items`` (default all) from ``page_token`` (an offset this server issued)."""
    token, size = request.query_params.get("page_token") or "0", request.query_params.get("page_size")
    if not token.isdigit() or (size is not None and not size.isdigit()):
        raise bad_request("page_token and page_size must be tokens this server issued and positive integers")
    start, count = int(token), int(size) if size and int(size) > 0 else len(items)
    answer: dict[str, Any] = {key: items[start : start + count]}
    if start + count < len(items):
        answer["next_page_token"] = str(start + count)
    return answer


async def create_monitor(request: Request) -> dict[str, Any]:
    body = await read_object(request)
    return await run_in_threadpool(service(request).create, body)


async def list_monitors(request: Request) -> dict[str, Any]:
    return _page(request, (await run_in_threadpool(service(request).list))["monitors"], "monitors")


async def get_monitor(object_type: str, object_id: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(service(request).get, object_type, object_id)


async def update_monitor(object_type: str, object_id: str, request: Request) -> dict[str, Any]:
    body = await read_object(request)
    mask = request.query_params.get("update_mask")
    return await run_in_threadpool(service(request).update, object_type, object_id, body, mask)


async def delete_monitor(object_type: str, object_id: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(service(request).delete, object_type, object_id)


async def create_refresh(object_type: str, object_id: str, request: Request) -> dict[str, Any]:
    await read_object(request)  # a Refresh whose fields are all set by the service
    return await run_in_threadpool(service(request).create_refresh, object_type, object_id)


async def list_refreshes(object_type: str, object_id: str, request: Request) -> dict[str, Any]:
    refreshes = await run_in_threadpool(service(request).list_refreshes, object_type, object_id)
    return _page(request, refreshes, "refreshes")


async def get_refresh(object_type: str, object_id: str, refresh_id: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(
        service(request).get_refresh, object_type, object_id, parse_refresh_id(refresh_id)
    )


async def cancel_refresh(
    object_type: str, object_id: str, refresh_id: str, request: Request
) -> dict[str, Any]:
    return await run_in_threadpool(
        service(request).cancel_refresh, object_type, object_id, parse_refresh_id(refresh_id)
    )
