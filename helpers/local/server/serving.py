"""Serving endpoints: the registry (persisted in ``workspace.db``), entity loading and invocation.

An endpoint serves registered model versions (MLflow pyfunc, ``models:/<catalog.schema.model>/<version>``) or
feature specs (``create_feature_spec``). A new configuration loads in a background thread while the current
one keeps answering; the swap is one assignment, so no request fails during an update.
"""

from __future__ import annotations

import asyncio
import gc
import getpass
import json
import logging
import os
import random
import re
import sqlite3
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from helpers.local.feature_spec import FeatureSpec, resolve_records
from helpers.local.functions import FunctionRegistry
from helpers.local.online_store import OnlineStore, TableNotPublishedError
from helpers.local.publishing import feature_spec_path, load_feature_spec
from helpers.local.server.errors import (
    ApiError,
    ModelLoadError,
    already_exists,
    bad_request,
    invalid_state,
    not_found,
)
from helpers.local.server.inference_tables import InferenceTableConfig, PayloadEvent, PayloadLogger
from helpers.local.server.limits import decode_json
from helpers.names import parse_uc_name

log = logging.getLogger(__name__)

ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
SERVED_ENTITY_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
WORKLOAD_SIZES = ("Small", "Medium", "Large")
INPUT_FORMATS = ("dataframe_records", "dataframe_split", "instances", "inputs")
STARTUP_WAIT_SECONDS = 300.0
RETIRE_GRACE_SECONDS = 5.0  # a replaced model's replica answers what it was sent, then stops
CREATING = ("DEPLOYMENT_CREATING", "Creating resources for served entity.")
MODEL_ERROR = (
    "Encountered an unexpected error while evaluating the model. Verify that the input is compatible with "
    "the model for inference. Error '{error}'"
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def model_error(message: str) -> ApiError:
    """What Databricks answers when the served model raises: 400 ``BAD_REQUEST``."""
    return ApiError(400, "BAD_REQUEST", message)


# Configuration records --------------------------------------------------------------------------------------
@dataclass
class ServedEntity:
    name: str
    entity_name: str
    entity_version: str | None
    workload_size: str
    scale_to_zero_enabled: bool
    workload_type: str | None
    creator: str
    creation_timestamp: int
    deployment: str = CREATING[0]
    deployment_state_message: str = CREATING[1]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the payload table's served_entity_id

    @property
    def key(self) -> tuple[str, str | None]:
        return self.entity_name, self.entity_version

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "entity_name": self.entity_name}
        if self.entity_version is not None:
            out["entity_version"] = self.entity_version
        out |= {"workload_size": self.workload_size, "scale_to_zero_enabled": self.scale_to_zero_enabled}
        if self.workload_type:
            out["workload_type"] = self.workload_type
        out["state"] = {
            "deployment": self.deployment,
            "deployment_state_message": self.deployment_state_message,
        }
        return out | {"creator": self.creator, "creation_timestamp": self.creation_timestamp}


@dataclass
class EndpointConfig:
    served_entities: list[ServedEntity]
    routes: list[tuple[str, int]]  # (served entity name, traffic percentage)
    config_version: int
    start_time: int
    auto_capture: dict[str, Any] | None = None  # ``auto_capture_config`` (the older inference tables)

    def to_json(self, *, pending: bool = False) -> dict[str, Any]:
        routes = [
            {"served_model_name": n, "served_entity_name": n, "traffic_percentage": p} for n, p in self.routes
        ]
        out: dict[str, Any] = {
            "served_entities": [e.to_json() for e in self.served_entities],
            "traffic_config": {"routes": routes},
            "config_version": self.config_version,
        }
        if self.auto_capture is not None:
            capture = InferenceTableConfig(**self.auto_capture)
            table = {"name": capture.payload_table.rsplit(".", 1)[1], "status": "ACTIVE"}
            out["auto_capture_config"] = capture.to_json() | {"state": {"payload_table": table}}
        return out | {"start_time": self.start_time} if pending else out

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> EndpointConfig | None:
        if doc is None:
            return None
        entities = [ServedEntity(**e) for e in doc["served_entities"]]
        routes = [tuple(r) for r in doc["routes"]]
        return cls(entities, routes, doc["config_version"], doc["start_time"], doc.get("auto_capture"))  # type: ignore[arg-type]


# Predictors -----------------------------------------------------------------------------------------------
class Router:
    """The loaded entities of one configuration; picks one per request by traffic percentage."""

    def __init__(self, config: EndpointConfig, predictors: dict[str, Predictor]) -> None:
        self.by_key = {e.key: predictors[e.name] for e in config.served_entities}
        self.entities = {e.name: e for e in config.served_entities}
        routes = [(name, pct) for name, pct in config.routes if pct > 0]
        self._names = [name for name, _ in routes]
        self._predictors = [predictors[name] for name in self._names]
        self._weights = [pct for _, pct in routes]

    def pick(self) -> tuple[str, Predictor]:
        if len(self._names) == 1:
            return self._names[0], self._predictors[0]
        i = random.choices(range(len(self._names)), weights=self._weights)[0]
        return self._names[i], self._predictors[i]


class Predictor:
    """Answers one invocation."""

    def __call__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError

    async def call_async(
        self, input_format: str, payload: Any, params: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The answer, from the event loop (a predictor that would block it says so here)."""
        return self(input_format, payload, params)

    def close(self) -> None:
        """Release what the predictor holds; called once no configuration routes to it."""


class FeatureSpecPredictor(Predictor):
    """A feature spec: online lookups and functions, answered as Databricks Feature Serving does."""

    def __init__(self, spec: FeatureSpec, store: OnlineStore, functions: FunctionRegistry) -> None:
        self._spec = spec
        self._store = store
        self._functions = functions

    def __call__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        records = request_records(input_format, payload)
        try:
            rows = resolve_records(self._spec, records, self._store, self._functions.callable)
        except TableNotPublishedError as err:
            raise invalid_state(str(err)) from None
        except KeyError as err:  # a request without a lookup key or function input column
            raise bad_request(str(err.args[0])) from None
        except LookupError as err:  # a function of the spec was deleted
            raise invalid_state(str(err)) from None
        except Exception as err:
            raise model_error(f"Encountered an error while computing features: {err}") from None
        return {"outputs": rows}


def request_records(input_format: str, payload: Any) -> list[dict[str, Any]]:
    """Request rows (column -> value) from any of the four input formats, without pandas."""
    if input_format in ("dataframe_records", "instances") or (
        input_format == "inputs" and isinstance(payload, list)
    ):
        if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
            raise bad_request(f"{input_format} must be a list of objects (column -> value)")
        records = payload
    elif input_format == "dataframe_split":
        columns = payload.get("columns") if isinstance(payload, dict) else None
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise bad_request("dataframe_split must be an object with 'columns' (a list of names) and 'data'")
        data = payload.get("data")
        if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
            raise bad_request("dataframe_split.data must be a list of rows (lists)")
        for i, row in enumerate(data):
            if len(row) != len(columns):
                raise bad_request(
                    f"dataframe_split.data[{i}] has {len(row)} values for {len(columns)} columns"
                )
        records = [dict(zip(columns, row, strict=True)) for row in data]
    elif isinstance(payload, dict):  # inputs: columns of values, or one row of scalars
        if all(isinstance(v, list) for v in payload.values()):
            lengths = {len(v) for v in payload.values()}
            if len(lengths) > 1:
                raise bad_request(
                    f"inputs columns must all have the same length, got lengths {sorted(lengths)}"
                )
            records = [
                dict(zip(payload, values, strict=True)) for values in zip(*payload.values(), strict=True)
            ]
        else:
            records = [payload]
    else:
        raise bad_request("inputs must be an object (column -> values) or a list of objects")
    if not records:
        raise bad_request(f"{input_format} holds no rows")
    return records


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _is_tag(tag: Any) -> bool:
    return isinstance(tag, dict) and _is_text(tag.get("key")) and isinstance(tag.get("value", ""), str | None)


def _is_text(value: Any) -> bool:
    """A string that UTF-8 can encode (JSON can carry lone surrogates, which it cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_invocation(body: bytes) -> tuple[str, Any, dict[str, Any] | None, str | None]:
    """(input format, payload, params, client_request_id) of an invocation body; 400 naming what is wrong.

    The 16 MB size limit is applied while the body is read (``limits.read_body``).
    """
    data = decode_json(body)
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object with one of {list(INPUT_FORMATS)}")
    present = [f for f in INPUT_FORMATS if f in data]
    if len(present) != 1:
        raise bad_request(
            f"the request must carry exactly one of {list(INPUT_FORMATS)}; got {present or sorted(data)}"
        )
    params = data.get("params")
    if params is not None and not isinstance(params, dict):
        raise bad_request("params must be an object (name -> value)")
    client_request_id = data.get("client_request_id")
    if client_request_id is not None and not _is_text(client_request_id):
        # A lone surrogate ("\ud800" in JSON) cannot be stored: it would block the inference table's writes.
        raise bad_request("client_request_id must be a string of valid Unicode text")
    return present[0], data[present[0]], params, client_request_id


# Endpoints ------------------------------------------------------------------------------------------------
_RUNTIME_FIELDS = ("router", "starting", "logged_to")


@dataclass
class Endpoint:
    name: str
    id: str
    creator: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str | None
    tags: list[dict[str, str]]
    config: EndpointConfig | None
    pending_config: EndpointConfig | None
    config_update: str  # NOT_UPDATING | IN_PROGRESS | UPDATE_FAILED
    ai_gateway: dict[str, Any] | None = None  # only ``inference_table_config`` is supported locally
    router: Router | None = field(default=None, repr=False)  # what answers requests now
    starting: Future | None = field(default=None, repr=False)  # reload of ``config`` after a restart
    # (AI Gateway config, auto-capture config, payload table) last computed: asked on every request
    logged_to: tuple[Any, Any, str | None] | None = field(default=None, repr=False)

    @property
    def ready(self) -> str:
        running = self.router is not None or self.starting is not None
        return "READY" if self.config is not None and running else "NOT_READY"

    def to_json(self) -> dict[str, Any]:
        """``ServingEndpointDetailed``."""
        out: dict[str, Any] = self._common()
        if self.config is not None:
            out["config"] = self.config.to_json()
        if self.pending_config is not None:
            out["pending_config"] = self.pending_config.to_json(pending=True)
        if self.ai_gateway:
            out["ai_gateway"] = self.ai_gateway
        return out | {"permission_level": "CAN_MANAGE", "route_optimized": False}

    def summary(self) -> dict[str, Any]:
        """``ServingEndpoint`` (what list returns)."""
        out = self._common()
        shown = self.config or self.pending_config
        if shown is not None:
            out["config"] = {
                "served_entities": [
                    {k: v for k, v in e.to_json().items() if k in ("name", "entity_name", "entity_version")}
                    for e in shown.served_entities
                ]
            }
        return out

    def _common(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "creator": self.creator,
            "creation_timestamp": self.creation_timestamp,
            "last_updated_timestamp": self.last_updated_timestamp,
            "state": {"ready": self.ready, "config_update": self.config_update},
        }
        if self.description:
            out["description"] = self.description
        if self.tags:
            out["tags"] = self.tags
        return out

    def doc(self) -> str:
        persisted = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _RUNTIME_FIELDS}
        return json.dumps(persisted, default=asdict)  # asdict turns the configurations into plain dicts

    def payload_table(self) -> str | None:
        """The table requests are logged to: AI Gateway's if enabled, else ``auto_capture_config``'s."""
        gateway = (self.ai_gateway or {}).get("inference_table_config")
        capture = self.config.auto_capture if self.config else None
        # The configs are replaced, never changed in place: the same objects mean the same table.
        if self.logged_to is not None and self.logged_to[0] is gateway and self.logged_to[1] is capture:
            return self.logged_to[2]
        table = next(
            (
                InferenceTableConfig(**raw).payload_table
                for raw in (gateway, capture)
                if raw and raw.get("enabled")
            ),
            None,
        )
        self.logged_to = (gateway, capture, table)
        return table

    @classmethod
    def from_doc(cls, text: str) -> Endpoint:
        doc = json.loads(text)
        doc["config"] = EndpointConfig.from_doc(doc["config"])
        doc["pending_config"] = EndpointConfig.from_doc(doc["pending_config"])
        return cls(**doc)


def _default_entity_name(entity_name: str, version: str | None) -> str:
    short = entity_name.rsplit(".", 1)[-1]
    return short if version is None else f"{short}-{version}"


class EndpointRegistry:
    """Every serving endpoint of the workspace: persisted in ``workspace.db``, loaded entities in memory."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = Path(state_dir)
        self._db = sqlite3.connect(
            self._state_dir / "workspace.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS serving_endpoints (name TEXT PRIMARY KEY, doc TEXT NOT NULL)"
        )
        # Every served entity ever deployed, like Databricks' system.serving.served_entities: it maps the
        # inference table's served_entity_id to a served entity name and model version.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS served_entities (served_entity_id TEXT PRIMARY KEY, "
            "endpoint_name TEXT, served_entity_name TEXT, entity_name TEXT, entity_version TEXT, "
            "change_time INTEGER)"
        )
        self._lock = threading.RLock()
        self._endpoints: dict[str, Endpoint] = {}
        self._closed = False
        # One loader thread: loads queue up, and MLflow is never imported by two threads at once (it breaks).
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entity-loader")
        self._store = OnlineStore(self._state_dir)
        self._functions = FunctionRegistry(self._state_dir)
        self._payloads = PayloadLogger(self._state_dir)
        self._live: set[Predictor] = set()  # loaded, and routed to or not yet retired
        self._user = getpass.getuser()

    # lifecycle
    def start(self) -> None:
        """Reload persisted endpoints and redeploy their configurations in the background."""
        # The registry is named now, while the environment is the server's: a warm-up that ran after a test
        # restored its environment would otherwise open MLflow's default ./mlflow.db.
        registry = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self._state_dir / 'mlflow.db'}"
        self._loader.submit(_warm_up_mlflow, registry)
        with self._lock:
            for (text,) in self._db.execute("SELECT doc FROM serving_endpoints ORDER BY name"):
                endpoint = Endpoint.from_doc(text)
                self._endpoints[endpoint.name] = endpoint
                if endpoint.config is not None:
                    endpoint.starting = self._deploy(endpoint.name, endpoint.config, {})
                if endpoint.pending_config is not None and endpoint.config_update == "IN_PROGRESS":
                    self._deploy(endpoint.name, endpoint.pending_config, {})
        log.info("serving endpoints loaded: %s", sorted(self._endpoints))

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._payloads.close()
        with self._lock:
            self._closed = True
            self._db.close()
            for predictor in self._live:
                predictor.close()
            self._live.clear()

    # REST operations
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not ENDPOINT_NAME.match(name):
            raise bad_request(
                f"name {name!r} is not a valid endpoint name: letters, digits, hyphens and underscores, "
                "starting with a letter or digit, at most 63 characters"
            )
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(_is_tag(t) for t in tags):
            raise bad_request("tags must be a list of {key, value} objects with string keys and values")
        if not isinstance(body.get("description", ""), str | None):
            raise bad_request("description must be a string")
        config_body = body.get("config")
        if not isinstance(config_body, dict):
            raise bad_request("config is required: {'served_entities': [{'entity_name': ..., ...}]}")
        with self._lock:
            if name in self._endpoints:
                raise already_exists(f"Endpoint with name '{name}' already exists.")
            now = _now_ms()
            pending = self._parse_config(config_body, "config", 1, now, name)
            ai_gateway = _parse_ai_gateway(body.get("ai_gateway"), "ai_gateway", name)
            endpoint = Endpoint(
                name=name,
                id=uuid.uuid4().hex,
                creator=getpass.getuser(),
                creation_timestamp=now,
                last_updated_timestamp=now,
                description=body.get("description"),
                tags=tags,
                config=None,
                pending_config=pending,
                config_update="IN_PROGRESS",
                ai_gateway=ai_gateway,
            )
            self._endpoints[name] = endpoint
            self._persist(endpoint)
            self._deploy(name, pending, {})
            return endpoint.to_json()

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._require(name).to_json()

    def list(self) -> dict[str, Any]:
        with self._lock:
            return {"endpoints": [e.summary() for e in self._endpoints.values()]}

    def delete(self, name: str) -> None:
        with self._lock:
            self._require(name)
            del self._endpoints[name]
            self._db.execute("DELETE FROM serving_endpoints WHERE name = ?", (name,))
            self._retire_unrouted()

    def update_config(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            endpoint = self._require(name)
            if endpoint.config_update == "IN_PROGRESS":
                raise ApiError(
                    409,
                    "RESOURCE_CONFLICT",
                    f"Endpoint {name} is being updated; wait until its config_update is NOT_UPDATING.",
                )
            latest = max(
                c.config_version for c in (endpoint.config, endpoint.pending_config) if c is not None
            )
            pending = self._parse_config(body, "", latest + 1, _now_ms(), name)
            current = endpoint.config or endpoint.pending_config
            if "auto_capture_config" not in body and current is not None:
                pending.auto_capture = current.auto_capture  # an update without it keeps the logging on
            if endpoint.config is not None:  # an entity that stays keeps its id (and its inference log rows)
                ids = {(e.name, e.key): e.id for e in endpoint.config.served_entities}
                for entity in pending.served_entities:
                    entity.id = ids.get((entity.name, entity.key), entity.id)
            endpoint.pending_config = pending
            endpoint.config_update = "IN_PROGRESS"
            endpoint.last_updated_timestamp = pending.start_time
            self._persist(endpoint)
            self._deploy(name, pending, endpoint.router.by_key if endpoint.router else {})
            return endpoint.to_json()

    def put_ai_gateway(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT .../ai-gateway``: replaces the endpoint's AI Gateway config (here: its inference table)."""
        with self._lock:
            endpoint = self._require(name)
            endpoint.ai_gateway = _parse_ai_gateway(body, "", name)
            endpoint.last_updated_timestamp = _now_ms()
            self._persist(endpoint)
            return endpoint.ai_gateway or {}

    async def invoke(self, name: str, body: bytes) -> tuple[str, bytes]:
        """(served entity name, JSON answer) for one invocation; logged to the inference table if any."""
        with self._lock:
            endpoint = self._require(name)
        table = endpoint.payload_table()
        if table is None:
            return await self._answer(endpoint, body, None)
        received_ns, started = time.time_ns(), time.perf_counter()
        outcome: dict[str, Any] = {}
        status, answer = 500, None
        try:
            served_name, answer = await self._answer(endpoint, body, outcome)
            status = 200
            return served_name, answer
        except ApiError as err:
            status, answer = err.status, json.dumps(err.body()).encode()
            raise
        finally:
            entity = outcome.get("entity")
            self._payloads.log(
                table,
                PayloadEvent(
                    received_ns=received_ns,
                    status_code=status,
                    execution_ms=round(outcome.get("execution_s", time.perf_counter() - started) * 1000),
                    request=body,
                    response=answer,
                    client_request_id=outcome.get("client_request_id"),
                    served_entity_id=entity.id if entity is not None else None,
                    requester=self._user,
                ),
            )

    async def _answer(
        self, endpoint: Endpoint, body: bytes, outcome: dict[str, Any] | None
    ) -> tuple[str, bytes]:
        input_format, payload, params, client_request_id = parse_invocation(body)
        router = endpoint.router
        if router is None:
            router = await self._wait_for_start(endpoint)
        served_name, predictor = router.pick()
        if outcome is not None:
            outcome["client_request_id"] = client_request_id
            outcome["entity"] = router.entities.get(served_name)
        started = time.perf_counter()
        try:
            answer = await predictor.call_async(input_format, payload, params)
        finally:
            if outcome is not None:
                outcome["execution_s"] = time.perf_counter() - started
        return served_name, json.dumps(answer, default=_json_default).encode()

    # internals
    def _require(self, name: str) -> Endpoint:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise not_found(f"Endpoint with name '{name}' does not exist.")
        return endpoint

    def _persist(self, endpoint: Endpoint) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO serving_endpoints (name, doc) VALUES (?, ?)",
            (endpoint.name, endpoint.doc()),
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO served_entities VALUES (?, ?, ?, ?, ?, ?)",
            [
                (e.id, endpoint.name, e.name, e.entity_name, e.entity_version, e.creation_timestamp)
                for config in (endpoint.config, endpoint.pending_config)
                if config is not None
                for e in config.served_entities
            ],
        )

    async def _wait_for_start(self, endpoint: Endpoint) -> Router:
        """A request that arrives while the endpoint (re)starts waits for it, as a scaled-to-zero one does."""
        starting = endpoint.starting
        if starting is not None:
            done, _ = await asyncio.wait({asyncio.wrap_future(starting)}, timeout=STARTUP_WAIT_SECONDS)
            if not done:
                raise ApiError(503, "TEMPORARILY_UNAVAILABLE", f"Endpoint {endpoint.name} is still starting.")
        if endpoint.router is not None:
            return endpoint.router
        if endpoint.config_update == "IN_PROGRESS":
            message = f"Endpoint {endpoint.name} is not ready yet: its configuration is being deployed."
            raise ApiError(503, "TEMPORARILY_UNAVAILABLE", message)
        failures = [
            f"{e.name}: {e.deployment_state_message}"
            for config in (endpoint.config, endpoint.pending_config)
            if config is not None
            for e in config.served_entities
            if e.deployment == "DEPLOYMENT_FAILED"
        ]
        raise invalid_state(
            f"Endpoint {endpoint.name} has no served entity ready. {'; '.join(failures)}".strip()
        )

    def _parse_config(
        self, body: dict[str, Any], where: str, version: int, now: int, endpoint_name: str
    ) -> EndpointConfig:
        prefix = f"{where}." if where else ""
        raw_entities = body.get("served_entities")
        if raw_entities is None and body.get("served_models") is not None:  # the older spelling
            raw_entities = [
                {**m, "entity_name": m.get("model_name"), "entity_version": m.get("model_version")}
                if isinstance(m, dict)
                else m
                for m in body["served_models"]
            ]
        if not isinstance(raw_entities, list) or not raw_entities:
            raise bad_request(f"{prefix}served_entities must list at least one entity to serve")
        entities = [
            self._parse_entity(e, f"{prefix}served_entities[{i}]", now) for i, e in enumerate(raw_entities)
        ]
        names = [e.name for e in entities]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise bad_request(
                f"{prefix}served_entities: served entity names must be unique, repeated: {duplicates}"
            )
        routes = _parse_routes(body.get("traffic_config"), names, f"{prefix}traffic_config")
        capture = body.get("auto_capture_config")
        if capture is not None:
            where = f"{prefix}auto_capture_config"
            capture = InferenceTableConfig.parse(capture, where, endpoint_name).to_json()
        return EndpointConfig(entities, routes, version, now, capture)

    def _parse_entity(self, raw: Any, where: str, now: int) -> ServedEntity:
        if not isinstance(raw, dict):
            raise bad_request(f"{where} must be an object")
        if raw.get("external_model") or raw.get("foundation_model"):
            raise bad_request(f"{where}: the local workspace serves registered models and feature specs only")
        entity_name = raw.get("entity_name")
        try:
            parse_uc_name(entity_name, "entity")
        except ValueError as err:
            raise bad_request(f"{where}.entity_name: {err}") from None
        version = raw.get("entity_version")
        if version is not None:
            version = str(version)
            if not version.isdigit():
                raise bad_request(f"{where}.entity_version {version!r} must be a model version number")
        elif not feature_spec_path(self._state_dir, entity_name).exists():
            raise bad_request(
                f"{where}.entity_version is required: {entity_name} is not a feature spec, and a model is "
                "served by version"
            )
        workload_size = raw.get("workload_size", "Small")
        if workload_size not in WORKLOAD_SIZES:
            raise bad_request(
                f"{where}.workload_size {workload_size!r} must be one of {list(WORKLOAD_SIZES)}"
            )
        scale_to_zero = raw.get("scale_to_zero_enabled", False)
        if not isinstance(scale_to_zero, bool):
            raise bad_request(f"{where}.scale_to_zero_enabled must be true or false")
        name = raw.get("name") or _default_entity_name(entity_name, version)
        if not isinstance(name, str) or not SERVED_ENTITY_NAME.match(name):
            raise bad_request(f"{where}.name {name!r} may hold only letters, digits, hyphens and underscores")
        return ServedEntity(
            name=name,
            entity_name=entity_name,
            entity_version=version,
            workload_size=workload_size,
            scale_to_zero_enabled=scale_to_zero,
            workload_type=raw.get("workload_type"),
            creator=getpass.getuser(),
            creation_timestamp=now,
        )

    def _deploy(
        self, name: str, config: EndpointConfig, loaded: dict[tuple[str, str | None], Predictor]
    ) -> Future:
        return self._loader.submit(self._load_config, name, config, loaded)

    def _load_config(
        self, name: str, config: EndpointConfig, loaded: dict[tuple[str, str | None], Predictor]
    ) -> None:
        predictors: dict[str, Predictor] = {}
        failures: dict[str, str] = {}
        for entity in config.served_entities:
            try:
                # A model version never changes, so one already loaded is reused; a feature spec is re-read.
                reuse = loaded.get(entity.key) if entity.entity_version is not None else None
                predictors[entity.name] = reuse or self._load_entity(entity)
            except Exception as err:  # a broken entity fails the update, never the server
                log.exception("endpoint %s: loading %s failed", name, entity.name)
                failures[entity.name] = (
                    str(err) if isinstance(err, ModelLoadError) else f"{type(err).__name__}: {err}"
                )
        with self._lock:
            self._live.update(predictors.values())
            try:
                self._route(name, config, predictors, failures)
            finally:
                self._retire_unrouted()
        # Hide what is loaded (MLflow, pandas, the feature specs: ~350,000 objects) from the garbage
        # collector: a full collection of them took 0.6-0.8 s on the busy 2-core machine, a stall that lands
        # in some request's latency. Cyclic garbage of a model unloaded later is then never collected.
        gc.freeze()

    def _route(
        self, name: str, config: EndpointConfig, predictors: dict[str, Predictor], failures: dict[str, str]
    ) -> None:
        """Record how loading ``config`` went and route the endpoint's requests to it if it loaded."""
        for entity in config.served_entities:
            if entity.name in failures:
                entity.deployment, entity.deployment_state_message = (
                    "DEPLOYMENT_FAILED",
                    failures[entity.name],
                )
            else:
                entity.deployment, entity.deployment_state_message = "DEPLOYMENT_READY", ""
        endpoint = self._endpoints.get(name)
        if endpoint is None or self._closed:
            return  # deleted while loading, or the server is stopping
        router = None if failures else Router(config, predictors)
        if endpoint.pending_config is config:
            if router is None:
                endpoint.config_update = "UPDATE_FAILED"
            else:
                endpoint.config, endpoint.pending_config = config, None
                endpoint.router, endpoint.config_update = router, "NOT_UPDATING"
        elif endpoint.config is config:  # the reload after a restart
            endpoint.router, endpoint.starting = router, None
        else:
            return  # superseded by a newer configuration
        endpoint.last_updated_timestamp = _now_ms()
        self._persist(endpoint)

    def _retire_unrouted(self) -> None:
        """Close, after a grace period, every loaded predictor that no endpoint routes requests to."""
        routed = {id(p) for e in self._endpoints.values() if e.router for p in e.router.by_key.values()}
        for predictor in [p for p in self._live if id(p) not in routed]:
            self._live.discard(predictor)
            timer = threading.Timer(RETIRE_GRACE_SECONDS, predictor.close)
            timer.daemon = True
            timer.start()

    def _load_entity(self, entity: ServedEntity) -> Predictor:
        started = time.perf_counter()
        predictor = self._open_entity(entity)
        log.info(
            "loaded %s version %s in %.1f s",
            entity.entity_name,
            entity.entity_version,
            time.perf_counter() - started,
        )
        return predictor

    def _open_entity(self, entity: ServedEntity) -> Predictor:
        if entity.entity_version is None:
            spec = load_feature_spec(self._state_dir, entity.entity_name)
            return FeatureSpecPredictor(spec, self._store, self._functions)
        from helpers.local.server.model_serving import ModelReplica

        return ModelReplica(f"models:/{entity.entity_name}/{entity.entity_version}")


def _warm_up_mlflow(registry_uri: str) -> None:
    """Import MLflow and open its registry once, so the first endpoint does not pay for it (seconds)."""
    try:
        import mlflow

        import helpers.local.server.model_serving  # noqa: F401 - with the request parser it uses

        client = mlflow.MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
        client.search_registered_models(max_results=1)
    except Exception:  # a registry problem shows up, with its message, when a model is loaded
        log.warning("MLflow warm-up failed", exc_info=True)


def _parse_ai_gateway(raw: Any, where: str, endpoint_name: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    prefix = f"{where}." if where else ""
    if not isinstance(raw, dict):
        raise bad_request(f"{where or 'the request body'} must be an object")
    unsupported = sorted(k for k, v in raw.items() if v and k not in ("inference_table_config", "name"))
    if unsupported:
        raise bad_request(
            f"{prefix}{unsupported[0]}: the local workspace supports only AI Gateway's inference_table_config"
        )
    table = raw.get("inference_table_config")
    if table is None:
        return None
    where = f"{prefix}inference_table_config"
    return {"inference_table_config": InferenceTableConfig.parse(table, where, endpoint_name).to_json()}


def _parse_routes(traffic: Any, names: list[str], where: str) -> list[tuple[str, int]]:
    if traffic is None:
        if len(names) == 1:
            return [(names[0], 100)]
        raise bad_request(f"{where} is required when an endpoint serves more than one entity")
    routes = traffic.get("routes") if isinstance(traffic, dict) else None
    if not isinstance(routes, list) or not routes:
        raise bad_request(f"{where}.routes must list at least one route")
    parsed: list[tuple[str, int]] = []
    for i, route in enumerate(routes):
        target = (
            route.get("served_entity_name") or route.get("served_model_name")
            if isinstance(route, dict)
            else None
        )
        if target not in names:
            raise bad_request(
                f"{where}.routes[{i}] must name one of the served entities {names}, got {target!r}"
            )
        pct = route.get("traffic_percentage")
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise bad_request(f"{where}.routes[{i}].traffic_percentage must be an integer from 0 to 100")
        parsed.append((target, pct))
    targets = [t for t, _ in parsed]
    if len(set(targets)) != len(targets):
        raise bad_request(f"{where}.routes name a served entity more than once")
    total = sum(p for _, p in parsed)
    if total != 100:
        raise bad_request(f"{where}.routes: the traffic_percentage values must add up to 100, got {total}")
    return parsed
