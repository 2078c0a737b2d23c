"""Deploying and querying serving endpoints with the real SDK (the same calls on Databricks and locally)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, ResourceDoesNotExist
from databricks.sdk.service.serving import (
    EndpointCoreConfigInput,
    ServedEntityInput,
    ServingEndpointDetailed,
    TrafficConfig,
)


def endpoint_exists(w: WorkspaceClient, name: str) -> bool:
    try:
        w.serving_endpoints.get(name)
    except (NotFound, ResourceDoesNotExist):
        return False
    return True


def served_entity(
    entity_name: str,
    entity_version: str | int | None = None,
    *,
    workload_size: str = "Small",
    scale_to_zero_enabled: bool = True,
    name: str | None = None,
) -> ServedEntityInput:
    """A served model version (``entity_version`` given) or feature spec (no version)."""
    return ServedEntityInput(
        entity_name=entity_name,
        entity_version=None if entity_version is None else str(entity_version),
        workload_size=workload_size,
        scale_to_zero_enabled=scale_to_zero_enabled,
        name=name,
    )


def deploy_endpoint(
    w: WorkspaceClient,
    name: str,
    served_entities: Sequence[ServedEntityInput],
    *,
    traffic_config: TrafficConfig | None = None,
    timeout: timedelta = timedelta(minutes=30),
) -> ServingEndpointDetailed:
    """Create the endpoint, or roll its config in place if it exists; wait (bounded) until it is ready."""
    entities = list(served_entities)
    started = time.monotonic()

    seen: list[str] = []

    def progress(endpoint: ServingEndpointDetailed) -> None:
        """Print each new state while waiting (Databricks takes minutes; the twin, seconds)."""
        state = endpoint.state
        ready, update = getattr(state.ready, "value", "?"), getattr(state.config_update, "value", "?")
        line = f"ready={ready} config_update={update}"
        if not seen or seen[-1] != line:
            seen.append(line)
            print(f"  {time.monotonic() - started:6.1f} s  {line}")

    if endpoint_exists(w, name):
        print(f"updating endpoint {name!r} (the current config keeps serving until the new one is ready)")
        waiter = w.serving_endpoints.update_config(
            name, served_entities=entities, traffic_config=traffic_config
        )
    else:
        print(f"creating endpoint {name!r}")
        config = EndpointCoreConfigInput(name=name, served_entities=entities, traffic_config=traffic_config)
        waiter = w.serving_endpoints.create(name, config=config)
    endpoint = waiter.result(timeout=timeout, callback=progress)
    print(f"endpoint {name!r} is {endpoint.state.ready.value} after {time.monotonic() - started:.1f} s")
    return endpoint


def time_calls(call: Callable[[int], Any], n: int) -> np.ndarray:
    """Call ``call(i)`` ``n`` times and return each call's latency in milliseconds."""
    latencies = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        call(i)
        latencies[i] = (time.perf_counter() - started) * 1000
    return latencies


def latency_summary(latencies_ms: np.ndarray) -> dict[str, float]:
    quantiles = (50, 90, 99)
    values = np.percentile(latencies_ms, quantiles)
    return {"n": len(latencies_ms), **{f"p{q}_ms": round(float(v), 2) for q, v in zip(quantiles, values)}}


def plot_latency(latencies_ms: np.ndarray, title: str) -> Any:
    """Histogram of latencies with p50 and p99 marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(latencies_ms, bins=40, color="#3b7dd8")
    for q, style in ((50, "-"), (99, "--")):
        value = np.percentile(latencies_ms, q)
        ax.axvline(value, color="k", ls=style, lw=1, label=f"p{q} = {value:.1f} ms")
    ax.set(xlabel="latency per request (ms)", ylabel="requests", title=title)
    ax.legend()
    return fig
