"""Endpoints: readiness, served entities and traffic split of every serving endpoint, from the API."""

from __future__ import annotations

import pandas as pd
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import ServingEndpointDetailed


def endpoint_names(w: WorkspaceClient) -> list[str]:
    return sorted(e.name for e in w.serving_endpoints.list() if e.name)


def summary(endpoint: ServingEndpointDetailed) -> dict[str, str]:
    state = endpoint.state
    return {
        "ready": state.ready.value if state and state.ready else "UNKNOWN",
        "config update": state.config_update.value if state and state.config_update else "NOT_UPDATING",
        "creator": endpoint.creator or "",
    }


def served_entities(endpoint: ServingEndpointDetailed) -> pd.DataFrame:
    """One row per served entity, with its share of the traffic."""
    config = endpoint.config
    routes = (
        {r.served_model_name: r.traffic_percentage for r in (config.traffic_config.routes or [])}
        if (config and config.traffic_config)
        else {}
    )
    entities = (config.served_entities or []) if config else []
    rows = [
        {
            "served entity": e.name,
            "entity": e.entity_name,
            "version": e.entity_version or "",
            "kind": "model version" if e.entity_version else "feature spec",
            "workload": e.workload_size or "",
            "scale to zero": bool(e.scale_to_zero_enabled),
            "traffic %": routes.get(e.name, 100 if len(entities) == 1 else 0),
        }
        for e in entities
    ]
    return pd.DataFrame(
        rows, columns=["served entity", "entity", "version", "kind", "workload", "scale to zero", "traffic %"]
    )
