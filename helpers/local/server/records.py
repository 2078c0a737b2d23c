"""Serving endpoint records: what is persisted and the JSON shapes ``databricks-sdk`` parses.

``ServedEntity`` and ``EndpointConfig`` are configuration records; ``Endpoint`` is one endpoint with its
current and pending configuration. What runs (the router of loaded predictors) is attached at runtime and
never persisted. States use Databricks' names: ``ready`` READY / NOT_READY, ``config_update`` NOT_UPDATING /
IN_PROGRESS / UPDATE_FAILED, a served entity's ``deployment`` DEPLOYMENT_CREATING / DEPLOYMENT_READY /
DEPLOYMENT_FAILED / DEPLOYMENT_RECOVERING.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from helpers.local.server.inference_tables import InferenceTableConfig

if TYPE_CHECKING:
    from helpers.local.server.predictors import Router

CREATING = ("DEPLOYMENT_CREATING", "Creating resources for served entity.")
READY = ("DEPLOYMENT_READY", "")
FAILED = "DEPLOYMENT_FAILED"
Health = tuple[str, str]  # (deployment state, message)


def now_ms() -> int:
    return int(time.time() * 1000)


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

    def to_json(self, health: Health | None = None) -> dict[str, Any]:
        """``ServedEntityOutput``; ``health`` (a running replica's own state) overrides the recorded one."""
        out: dict[str, Any] = {"name": self.name, "entity_name": self.entity_name}
        if self.entity_version is not None:
            out["entity_version"] = self.entity_version
        out |= {"workload_size": self.workload_size, "scale_to_zero_enabled": self.scale_to_zero_enabled}
        if self.workload_type:
            out["workload_type"] = self.workload_type
        deployment, message = health or (self.deployment, self.deployment_state_message)
        out["state"] = {"deployment": deployment, "deployment_state_message": message}
        return out | {"creator": self.creator, "creation_timestamp": self.creation_timestamp}


@dataclass
class EndpointConfig:
    served_entities: list[ServedEntity]
    routes: list[tuple[str, int]]  # (served entity name, traffic percentage)
    config_version: int
    start_time: int
    auto_capture: dict[str, Any] | None = None  # ``auto_capture_config`` (the older inference tables)

    def to_json(self, *, pending: bool = False, router: Router | None = None) -> dict[str, Any]:
        routes = [
            {"served_model_name": n, "served_entity_name": n, "traffic_percentage": p} for n, p in self.routes
        ]
        entities = [e.to_json(router.health(e.name) if router else None) for e in self.served_entities]
        out: dict[str, Any] = {
            "served_entities": entities,
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
        routes = [(name, pct) for name, pct in doc["routes"]]
        return cls(entities, routes, doc["config_version"], doc["start_time"], doc.get("auto_capture"))


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
        """READY while a configuration answers (or reloads); NOT_READY while none of its replicas runs."""
        if self.config is None:
            return "NOT_READY"
        if self.starting is not None or (self.router is not None and self.router.serving()):
            return "READY"
        return "NOT_READY"

    def to_json(self) -> dict[str, Any]:
        """``ServingEndpointDetailed``."""
        out: dict[str, Any] = self._common()
        if self.config is not None:
            out["config"] = self.config.to_json(router=self.router)
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

    def failures(self) -> list[str]:
        """``<entity>: <why>`` for each served entity whose deployment failed."""
        return [
            f"{e.name}: {e.deployment_state_message}"
            for config in (self.config, self.pending_config)
            if config is not None
            for e in config.served_entities
            if e.deployment == FAILED
        ]

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

    def doc(self) -> str:
        persisted = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _RUNTIME_FIELDS}
        return json.dumps(persisted, default=asdict)  # asdict turns the configurations into plain dicts

    @classmethod
    def from_doc(cls, text: str) -> Endpoint:
        doc = json.loads(text)
        doc["config"] = EndpointConfig.from_doc(doc["config"])
        doc["pending_config"] = EndpointConfig.from_doc(doc["pending_config"])
        return cls(**doc)
