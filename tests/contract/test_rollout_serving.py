"""Traffic split and inference tables on the local workspace server, through the real ``databricks-sdk``."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import fresh_state
import mlflow
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    AutoCaptureConfigInput,
    EndpointCoreConfigInput,
    Route,
    ServedEntityInput,
    TrafficConfig,
)
from test_serving_api import MODEL, _register_models

from helpers.local.server.process import ensure_server, read_info, running_server, stop_server
from helpers.local.tables import DeltaTables

ROW = {"x1": 1.0, "x2": 0.0}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = fresh_state.seed(tmp_path_factory.mktemp("rollout"))
    uri = f"sqlite:///{path / 'mlflow.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("HELPERS_STATE_DIR", str(path))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        _register_models(path)
        with running_server(path):
            yield path
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        patch.undo()


def _client(state_dir: Path) -> WorkspaceClient:
    info = ensure_server(state_dir)
    return WorkspaceClient(host=info.url, token=info.token, auth_type="pat")


def _entities() -> list[ServedEntityInput]:
    return [
        ServedEntityInput(entity_name=MODEL, entity_version="1", name="champion", scale_to_zero_enabled=True),
        ServedEntityInput(
            entity_name=MODEL, entity_version="2", name="challenger", scale_to_zero_enabled=True
        ),
    ]


def _split(champion: int, challenger: int) -> TrafficConfig:
    return TrafficConfig(
        routes=[
            Route(served_entity_name="champion", traffic_percentage=champion),
            Route(served_model_name="challenger", traffic_percentage=challenger),
        ]
    )


def test_requests_follow_the_traffic_percentages(state_dir: Path) -> None:
    w = _client(state_dir)
    config = EndpointCoreConfigInput(name="ab", served_entities=_entities(), traffic_config=_split(90, 10))
    created = w.serving_endpoints.create_and_wait(name="ab", config=config)
    assert [(r.served_entity_name, r.traffic_percentage) for r in created.config.traffic_config.routes] == [
        ("champion", 90),
        ("challenger", 10),
    ]

    n = 400
    counts = Counter(
        w.serving_endpoints.query("ab", dataframe_records=[ROW]).served_model_name for _ in range(n)
    )

    # Binomial(n=400, p=0.1): mean 40, sd 6. Five standard deviations (±30) fail a correct router once in
    # ~1.7 million runs, and catch a router that ignores the weights (200) or inverts them (360).
    tolerance = 5 * math.sqrt(n * 0.1 * 0.9)
    assert set(counts) == {"champion", "challenger"}
    assert abs(counts["challenger"] - n * 0.1) <= tolerance, counts
    w.serving_endpoints.delete("ab")


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        ([("champion", 90), ("challenger", 20)], "add up to 100, got 110"),
        ([("champion", 100), ("nobody", 0)], "must name one of the served entities"),
        ([("champion", 50), ("champion", 50)], "more than once"),
        ([("champion", 110), ("challenger", -10)], "integer from 0 to 100"),
        (None, "traffic_config is required"),
    ],
)
def test_bad_routes_are_refused_naming_the_problem(
    state_dir: Path, routes: list[tuple[str, int]] | None, problem: str
) -> None:
    w = _client(state_dir)
    traffic = None
    if routes is not None:
        traffic = TrafficConfig(routes=[Route(served_entity_name=n, traffic_percentage=p) for n, p in routes])
    config = EndpointCoreConfigInput(name="bad", served_entities=_entities(), traffic_config=traffic)
    with pytest.raises(BadRequest, match=problem):
        w.serving_endpoints.create(name="bad", config=config)
    assert "bad" not in {e.name for e in w.serving_endpoints.list()}


def _payload_rows(state_dir: Path, table: str) -> list[dict]:
    return DeltaTables(state_dir).read_any(table).to_pylist()


def _entity_names(state_dir: Path) -> dict[str, str]:
    with sqlite3.connect(state_dir / "workspace.db") as db:
        return dict(db.execute("SELECT served_entity_id, served_entity_name FROM served_entities"))


def test_every_request_is_logged_and_a_clean_stop_loses_nothing(state_dir: Path) -> None:
    w = _client(state_dir)
    gateway = AiGatewayInferenceTableConfig(
        catalog_name="main", schema_name="default", table_name_prefix="logged", enabled=True
    )
    config = EndpointCoreConfigInput(
        name="logged", served_entities=_entities(), traffic_config=_split(50, 50)
    )
    created = w.serving_endpoints.create_and_wait(
        name="logged", config=config, ai_gateway=AiGatewayConfig(inference_table_config=gateway)
    )
    assert created.ai_gateway.inference_table_config.table_name_prefix == "logged"

    answered = Counter()
    for i in range(40):
        body = {"dataframe_records": [ROW], "client_request_id": f"req-{i}"}
        answer = w.api_client.do(
            "POST", "/serving-endpoints/logged/invocations", body=body, response_headers=["served-model-name"]
        )
        answered[answer["served-model-name"]] += 1
    for _ in range(3):  # the model refuses a request without column x2: logged with its status too
        with pytest.raises(BadRequest):
            w.serving_endpoints.query("logged", dataframe_records=[{"x1": 1.0}])

    stop_server(state_dir)  # a clean stop writes what is buffered
    rows = _payload_rows(state_dir, "main.default.logged_payload")

    assert len(rows) == 43
    assert Counter(r["status_code"] for r in rows) == {200: 40, 400: 3}
    names = _entity_names(state_dir)
    ok = [r for r in rows if r["status_code"] == 200]
    assert Counter(names[r["served_entity_id"]] for r in ok) == answered
    assert {r["client_request_id"] for r in ok} == {f"req-{i}" for i in range(40)}
    assert all('"predictions"' in r["response"] and '"x2"' in r["request"] for r in ok)
    failed = [r for r in rows if r["status_code"] == 400]
    assert all("x2" in r["response"] and r["client_request_id"] is None for r in failed)
    assert len({r["databricks_request_id"] for r in rows}) == 43
    assert all(
        r["request_date"] == r["request_time"].date() and r["execution_duration_ms"] >= 0 for r in rows
    )
    ensure_server(state_dir)


def test_auto_capture_config_and_put_ai_gateway(state_dir: Path) -> None:
    w = _client(state_dir)
    capture = AutoCaptureConfigInput(catalog_name="main", schema_name="default", table_name_prefix="legacy")
    config = EndpointCoreConfigInput(
        name="legacy", served_entities=_entities()[:1], auto_capture_config=capture
    )
    created = w.serving_endpoints.create_and_wait(name="legacy", config=config)
    assert created.config.auto_capture_config.state.payload_table.name == "legacy_payload"
    w.serving_endpoints.query("legacy", dataframe_records=[ROW])

    # The split moves while requests keep coming: none fails, and the logging stays on.
    errors: list[Exception] = []
    done = threading.Event()

    def fire() -> None:
        client = _client(state_dir)
        while not done.is_set():
            try:
                client.serving_endpoints.query("legacy", dataframe_records=[ROW])
            except Exception as err:  # noqa: BLE001 - every failure is the finding
                errors.append(err)

    thread = threading.Thread(target=fire)
    thread.start()
    try:
        for split in ((90, 10), (0, 100)):
            w.serving_endpoints.update_config_and_wait(
                "legacy", served_entities=_entities(), traffic_config=_split(*split)
            )
    finally:
        done.set()
        thread.join()
    assert not errors
    assert w.serving_endpoints.query("legacy", dataframe_records=[ROW]).served_model_name == "challenger"

    moved = w.serving_endpoints.put_ai_gateway(
        "legacy",
        inference_table_config=AiGatewayInferenceTableConfig(
            catalog_name="main", schema_name="default", table_name_prefix="gateway", enabled=True
        ),
    )
    assert moved.inference_table_config.table_name_prefix == "gateway"
    w.serving_endpoints.query("legacy", dataframe_records=[ROW])
    with pytest.raises(BadRequest, match="schema_name"):
        w.serving_endpoints.put_ai_gateway(
            "legacy",
            inference_table_config=AiGatewayInferenceTableConfig(
                catalog_name="main", schema_name="no-dashes", enabled=True
            ),
        )

    stop_server(state_dir)
    assert read_info(state_dir) is None
    assert len(_payload_rows(state_dir, "main.default.gateway_payload")) == 1
    assert len(_payload_rows(state_dir, "main.default.legacy_payload")) >= 2
    ensure_server(state_dir)
