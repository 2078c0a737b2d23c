"""Deploying and querying serving endpoints with the real SDK (the same calls on Databricks and locally)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, OperationFailed, ResourceDoesNotExist
from databricks.sdk.service.serving import (
    AiGatewayInferenceTableConfig,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
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


def enable_inference_table(
    w: WorkspaceClient, endpoint_name: str, catalog: str, schema: str, table_name_prefix: str
) -> str:
    """Log every request of the endpoint (AI Gateway inference table); returns the payload table's name."""
    w.serving_endpoints.put_ai_gateway(
        endpoint_name,
        inference_table_config=AiGatewayInferenceTableConfig(
            catalog_name=catalog, schema_name=schema, table_name_prefix=table_name_prefix, enabled=True
        ),
    )
    return f"{catalog}.{schema}.{table_name_prefix}_payload"


class BackgroundTraffic:
    """Queries an endpoint in a thread until stopped, counting answers per served entity and failures.

    ``with BackgroundTraffic(w, name, records) as traffic: <change the endpoint>`` shows whether any request
    failed while the change happened.
    """

    def __init__(self, w: WorkspaceClient, endpoint_name: str, records: Sequence[dict[str, Any]]) -> None:
        self._w, self._name, self._records = w, endpoint_name, list(records)
        self.served: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def sent(self) -> int:
        return sum(self.served.values()) + len(self.failures)

    def wait_for(self, n: int, timeout: float = 120.0) -> None:
        """Block until at least ``n`` requests were sent (or ``timeout`` seconds passed)."""
        deadline = time.monotonic() + timeout
        while self.sent < n and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            record = self._records[i % len(self._records)]
            i += 1
            try:
                answer = self._w.serving_endpoints.query(self._name, dataframe_records=[record])
            except Exception as err:  # noqa: BLE001 - a failed request is what this counts
                self.failures.append(f"{type(err).__name__}: {err}")
                continue
            name = answer.served_model_name or "?"
            self.served[name] = self.served.get(name, 0) + 1


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
        w.serving_endpoints.update_config(name, served_entities=entities, traffic_config=traffic_config)
    else:
        print(f"creating endpoint {name!r}")
        config = EndpointCoreConfigInput(name=name, served_entities=entities, traffic_config=traffic_config)
        w.serving_endpoints.create(name, config=config)
    endpoint = wait_until_updated(w, name, timeout, progress)
    print(f"endpoint {name!r} is {endpoint.state.ready.value} after {time.monotonic() - started:.1f} s")
    return endpoint


def wait_until_updated(
    w: WorkspaceClient,
    name: str,
    timeout: timedelta = timedelta(minutes=30),
    callback: Callable[[ServingEndpointDetailed], None] | None = None,
    max_poll_seconds: float = 10.0,
) -> ServingEndpointDetailed:
    """Poll the endpoint until its config update is over, as the SDK's ``create_and_wait`` does.

    The SDK sleeps 1 s, 2 s, 3 s, ... between polls; this polls from every 0.25 s, backing off to
    ``max_poll_seconds``, so an endpoint ready in seconds (the local twin's) is seen when it is. Like the SDK:
    ``OperationFailed`` when the update failed or was canceled, ``TimeoutError`` after ``timeout``.
    """
    deadline = time.monotonic() + timeout.total_seconds()
    pause = 0.25
    while True:
        endpoint = w.serving_endpoints.get(name)
        status = endpoint.state.config_update if endpoint.state else None
        if status == EndpointStateConfigUpdate.NOT_UPDATING:
            return endpoint
        if callback is not None:
            callback(endpoint)
        if status in (EndpointStateConfigUpdate.UPDATE_FAILED, EndpointStateConfigUpdate.UPDATE_CANCELED):
            raise OperationFailed(f"endpoint {name}: failed to reach NOT_UPDATING, got {status}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"endpoint {name}: still {status} after {timeout}")
        time.sleep(pause)
        pause = min(pause * 1.5, max_poll_seconds)


def time_calls(call: Callable[[int], Any], n: int) -> np.ndarray:
    """Call ``call(i)`` ``n`` times and return each call's latency in milliseconds."""
    latencies = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        call(i)
        latencies[i] = (time.perf_counter() - started) * 1000
    return latencies


def seconds_until(
    condition: Callable[[], bool], timeout: timedelta = timedelta(minutes=10), interval: float = 0.1
) -> float:
    """Poll ``condition`` every ``interval`` seconds; the seconds it took to hold (TimeoutError after
    ``timeout``). Used for freshness: how long a write takes to become readable online."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout.total_seconds():
            raise TimeoutError(f"still not true after {timeout}")
        time.sleep(interval)
    return time.monotonic() - started


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
