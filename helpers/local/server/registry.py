"""The endpoint registry: every serving endpoint of the workspace, its lifecycle and its invocations.

A new configuration loads in a background thread while the current one keeps answering; the swap is one
assignment, so no request fails during an update. Records are kept by the ``EndpointStore``; what answers
is a ``Router`` of ``Predictor`` objects (a model version's runs in a supervised replica process).
"""

from __future__ import annotations

import asyncio
import gc
import getpass
import logging
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from helpers.local.functions import FunctionRegistry
from helpers.local.online_store import OnlineStore
from helpers.local.publishing import feature_spec_path, load_feature_spec
from helpers.local.server.endpoint_store import EndpointStore
from helpers.local.server.errors import (
    ApiError,
    ModelLoadError,
    already_exists,
    conflict,
    invalid_state,
    not_found,
    unavailable,
)
from helpers.local.server.inference_tables import PayloadEvent, PayloadLogger
from helpers.local.server.layout import mlflow_uri
from helpers.local.server.parsing import (
    parse_ai_gateway,
    parse_config,
    parse_endpoint_fields,
    parse_invocation,
)
from helpers.local.server.predictors import FeatureSpecPredictor, Predictor, Router, encode_answer
from helpers.local.server.records import FAILED, READY, Endpoint, EndpointConfig, ServedEntity, now_ms

log = logging.getLogger(__name__)

STARTUP_WAIT_SECONDS = 300.0
RETIRE_GRACE_SECONDS = 5.0  # a replaced model's replica answers what it was sent, then stops
EXECUTION_LIMIT_ENV = "HELPERS_SERVING_TIMEOUT_SECONDS"
EXECUTION_LIMIT_SECONDS = 297.0  # Databricks' request limit for CPU and GPU endpoints (it cannot be raised)
Loaded = dict[tuple[str, str | None], Predictor]


def execution_limit() -> float:
    """The longest a model may take to answer: ``$HELPERS_SERVING_TIMEOUT_SECONDS`` or Databricks' 297 s."""
    raw = os.environ.get(EXECUTION_LIMIT_ENV)
    limit = float(raw) if raw else EXECUTION_LIMIT_SECONDS
    if not limit > 0:
        raise ValueError(f"{EXECUTION_LIMIT_ENV} must be a positive number of seconds, got {raw!r}")
    return limit


class EndpointRegistry:
    """Every serving endpoint of the workspace: records in the ``EndpointStore``, what answers in memory."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = Path(state_dir)
        self._records = EndpointStore(self._state_dir)
        self._lock = threading.RLock()
        self._endpoints: dict[str, Endpoint] = {}
        self._closed = False
        # One loader thread: loads queue up, and MLflow is never imported by two threads at once (it breaks).
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entity-loader")
        self._mlflow_ready: Future | None = None
        self._registry_uri = mlflow_uri(self._state_dir)
        self._store = OnlineStore(self._state_dir)
        self._functions = FunctionRegistry(self._state_dir)
        self._payloads = PayloadLogger(self._state_dir)
        self._live: set[Predictor] = set()  # loaded, and routed to or not yet retired
        self._user = getpass.getuser()
        self._execution_limit = execution_limit()

    # lifecycle
    def start(self) -> None:
        """Reload persisted endpoints and redeploy their configurations in the background."""
        # The registry is named now, while the environment is the server's: a warm-up that ran after a test
        # restored its environment would otherwise open MLflow's default ./mlflow.db.
        self._registry_uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow_uri(self._state_dir)
        self._mlflow_ready = self._loader.submit(_warm_up_mlflow, self._registry_uri)
        with self._lock:
            for endpoint in self._records.load():
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
            self._records.close()
            for predictor in self._live:
                predictor.close()
            self._live.clear()

    # REST operations
    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name, tags, description, config_body = parse_endpoint_fields(body)
        self._require_new(name)
        now = now_ms()
        pending = parse_config(config_body, "config", 1, now, name, self._is_feature_spec)
        ai_gateway = parse_ai_gateway(body.get("ai_gateway"), "ai_gateway", name)
        await self._require_versions(pending, "config")
        with self._lock:
            self._require_new(name)  # again: another request may have created it meanwhile
            endpoint = Endpoint(
                name=name,
                id=uuid.uuid4().hex,
                creator=self._user,
                creation_timestamp=now,
                last_updated_timestamp=now,
                description=description,
                tags=tags,
                config=None,
                pending_config=pending,
                config_update="IN_PROGRESS",
                ai_gateway=ai_gateway,
            )
            self._endpoints[name] = endpoint
            self._records.save(endpoint)
            self._deploy(name, pending, {})
            return endpoint.to_json()

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._require(name).to_json()

    def list(self) -> dict[str, Any]:
        with self._lock:
            return {"endpoints": [e.summary() for e in self._endpoints.values()]}

    def delete(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._require(name)
            del self._endpoints[name]
            self._records.delete(name)
            self._retire_unrouted()
        return {}

    async def update_config(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            endpoint = self._require_updatable(name)
            latest = max(
                c.config_version for c in (endpoint.config, endpoint.pending_config) if c is not None
            )
        pending = parse_config(body, "", latest + 1, now_ms(), name, self._is_feature_spec)
        await self._require_versions(pending, "")
        with self._lock:
            endpoint = self._require_updatable(name)
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
            self._records.save(endpoint)
            self._deploy(name, pending, endpoint.router.by_key if endpoint.router else {})
            return endpoint.to_json()

    def put_ai_gateway(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT .../ai-gateway``: replaces the endpoint's AI Gateway config (here: its inference table)."""
        with self._lock:
            endpoint = self._require(name)
            endpoint.ai_gateway = parse_ai_gateway(body, "", name)
            endpoint.last_updated_timestamp = now_ms()
            self._records.save(endpoint)
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
            status, answer = err.status, encode_answer(err.body())
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
        return served_name, encode_answer(answer)

    # internals
    def _require(self, name: str) -> Endpoint:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise not_found(f"Endpoint with name '{name}' does not exist.")
        return endpoint

    def _require_new(self, name: str) -> None:
        with self._lock:
            if name in self._endpoints:
                raise already_exists(f"Endpoint with name '{name}' already exists.")

    def _require_updatable(self, name: str) -> Endpoint:
        endpoint = self._require(name)
        if endpoint.config_update == "IN_PROGRESS":
            raise conflict(f"Endpoint {name} is being updated; wait until its config_update is NOT_UPDATING.")
        return endpoint

    def _is_feature_spec(self, name: str) -> bool:
        return feature_spec_path(self._state_dir, name).exists()

    async def _require_versions(self, config: EndpointConfig, where: str) -> None:
        """404 ``RESOURCE_DOES_NOT_EXIST`` at once for a model version the registry does not hold."""
        prefix = f"{where}." if where else ""
        wanted = [(i, e) for i, e in enumerate(config.served_entities) if e.entity_version is not None]
        if not wanted:
            return
        if self._mlflow_ready is not None:
            await asyncio.wrap_future(self._mlflow_ready)  # MLflow imported once, by the loader thread
        missing = await asyncio.to_thread(_missing_versions, self._registry_uri, [e for _, e in wanted])
        for i, entity in wanted:
            if entity.key in missing:
                raise not_found(
                    f"{prefix}served_entities[{i}]: Model version {entity.entity_version} of "
                    f"{entity.entity_name} does not exist. Register it first (mlflow.register_model or "
                    "fe.log_model with registered_model_name), or serve a version that exists."
                )

    async def _wait_for_start(self, endpoint: Endpoint) -> Router:
        """A request that arrives while the endpoint (re)starts waits for it, as a scaled-to-zero one does."""
        starting = endpoint.starting
        if starting is not None:
            done, _ = await asyncio.wait({asyncio.wrap_future(starting)}, timeout=STARTUP_WAIT_SECONDS)
            if not done:
                raise unavailable(f"Endpoint {endpoint.name} is still starting.")
        if endpoint.router is not None:
            return endpoint.router
        if endpoint.config_update == "IN_PROGRESS":
            raise unavailable(
                f"Endpoint {endpoint.name} is not ready yet: its configuration is being deployed."
            )
        failures = "; ".join(endpoint.failures())
        raise invalid_state(f"Endpoint {endpoint.name} has no served entity ready. {failures}".strip())

    def _deploy(self, name: str, config: EndpointConfig, loaded: Loaded) -> Future:
        return self._loader.submit(self._load_config, name, config, loaded)

    def _load_config(self, name: str, config: EndpointConfig, loaded: Loaded) -> None:
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
                entity.deployment, entity.deployment_state_message = FAILED, failures[entity.name]
            else:
                entity.deployment, entity.deployment_state_message = READY
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
        endpoint.last_updated_timestamp = now_ms()
        self._records.save(endpoint)

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
        if entity.entity_version is None:
            spec = load_feature_spec(self._state_dir, entity.entity_name)
            predictor: Predictor = FeatureSpecPredictor(spec, self._store, self._functions)
        else:
            from helpers.local.server.model_processes import ModelReplica  # MLflow and pandas: loaded late

            uri = f"models:/{entity.entity_name}/{entity.entity_version}"
            predictor = ModelReplica(uri, execution_limit=self._execution_limit)
        log.info(
            "loaded %s version %s in %.1f s",
            entity.entity_name,
            entity.entity_version,
            time.perf_counter() - started,
        )
        return predictor


def _warm_up_mlflow(registry_uri: str) -> None:
    """Import MLflow and open its registry once, so the first endpoint does not pay for it (seconds)."""
    try:
        import mlflow

        import helpers.local.server.model_processes  # noqa: F401 - with the request parser it uses

        client = mlflow.MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
        client.search_registered_models(max_results=1)
    except Exception:  # a registry problem shows up, with its message, when a model is loaded
        log.warning("MLflow warm-up failed", exc_info=True)


def _missing_versions(registry_uri: str, entities: list[ServedEntity]) -> set[tuple[str, str | None]]:
    """The (model, version) pairs of ``entities`` that the MLflow registry does not hold."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    missing = set()
    for entity in entities:
        try:
            client.get_model_version(entity.entity_name, str(entity.entity_version))
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                missing.add(entity.key)
            # any other registry error shows up, with its message, when the model is loaded
    return missing
