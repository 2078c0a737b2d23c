"""The serving routes of the local workspace server, driven through the real ``databricks-sdk``.

One server process (``running_server``) serves a tiny registered sklearn model (two versions) and a feature
spec over a published Delta table, all in a temporary state directory.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import fresh_state
import mlflow
import pandas as pd
import psutil
import pyarrow as pa
import pytest
import requests
from databricks.sdk.errors import (
    BadRequest,
    NotFound,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    Unauthenticated,
)
from databricks.sdk.service.serving import (
    DataframeSplitInput,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    Route,
    ServedEntityInput,
    ServedModelStateDeployment,
    TrafficConfig,
)
from publishing_client import PublishingClient
from sklearn.linear_model import LogisticRegression
from workspace import Workspace

from helpers.local.server.process import (
    ensure_server,
    info_path,
    read_info,
    running_server,
    stop_server,
)
from helpers.local.tables import TableMeta

MODEL = "main.default.tiny_model"
SPEC = "main.default.customer_features"
UNPUBLISHED_SPEC = "main.default.store_features"
CUSTOMERS = "main.default.customers"
X = pd.DataFrame({"x1": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "x2": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
Y = [0, 0, 0, 1, 1, 1]


def _register_models(state_dir: Path) -> None:
    experiment = mlflow.create_experiment("contract", artifact_location=(state_dir / "mlruns").as_uri())
    for model in (LogisticRegression().fit(X, Y), LogisticRegression(C=100.0).fit(X, Y)):
        with mlflow.start_run(experiment_id=experiment):
            signature = mlflow.models.infer_signature(X, model.predict(X))
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                registered_model_name=MODEL,
                pip_requirements=["scikit-learn"],  # skips inferring them (a subprocess per model)
            )


def _publish_features(state_dir: Path) -> None:
    from databricks.feature_engineering import FeatureFunction, FeatureLookup

    fe = PublishingClient(state_dir)
    data = pa.table({"customer_id": [1, 2, 3], "age": [25, 41, 67], "segment": ["new", "regular", "vip"]})
    fe._tables.create(TableMeta(CUSTOMERS, ["customer_id"]), data, None)
    fe._tables.set_properties(CUSTOMERS, {"delta.enableChangeDataFeed": "true"})
    fe._functions.create(
        "main.default.is_senior", {"age": "INT"}, "BOOLEAN", "return None if age is None else age >= 65"
    )
    store = fe.create_online_store(name="contract-store", capacity="CU_1")
    fe.publish_table(online_store=store, source_table_name=CUSTOMERS, online_table_name=f"{CUSTOMERS}_online")
    fe.create_feature_spec(
        name=SPEC,
        features=[
            FeatureLookup(table_name=CUSTOMERS, lookup_key="customer_id"),
            FeatureFunction(
                udf_name="main.default.is_senior", input_bindings={"age": "age"}, output_name="senior"
            ),
        ],
    )
    fe._tables.create(
        TableMeta("main.default.stores", ["store_id"]), pa.table({"store_id": [1], "size": [9]}), None
    )
    fe.create_feature_spec(
        name=UNPUBLISHED_SPEC,
        features=[FeatureLookup(table_name="main.default.stores", lookup_key="store_id")],
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    state_dir = fresh_state.seed(tmp_path_factory.mktemp("workspace"))
    uri = f"sqlite:///{state_dir / 'mlflow.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("HELPERS_STATE_DIR", str(state_dir))
    mlflow.set_tracking_uri(uri)  # also exported, so the server process uses the same registry
    mlflow.set_registry_uri(uri)
    try:
        _register_models(state_dir)
        _publish_features(state_dir)
        with running_server(state_dir):
            yield Workspace(state_dir)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        patch.undo()


def _model_config(*versions: str, split: list[int] | None = None) -> dict:
    entities = [
        ServedEntityInput(
            entity_name=MODEL, entity_version=v, workload_size="Small", scale_to_zero_enabled=True
        )
        for v in versions
    ]
    routes = None
    if split is not None:
        routes = TrafficConfig(
            routes=[
                Route(served_entity_name=f"tiny_model-{v}", traffic_percentage=p)
                for v, p in zip(versions, split, strict=True)
            ]
        )
    return {"served_entities": entities, "traffic_config": routes}


def test_host_metadata_needs_no_token_but_every_api_does(workspace: Workspace) -> None:
    metadata = requests.get(f"{workspace.server.url}/.well-known/databricks-config", timeout=10)
    assert metadata.status_code == 200 and metadata.json()["workspace_id"].isdigit()

    with pytest.raises(Unauthenticated):
        list(workspace.client(token="dapi-wrong").serving_endpoints.list())
    bare = requests.get(f"{workspace.server.url}/api/2.0/serving-endpoints", timeout=10)
    assert bare.status_code == 401 and bare.json()["error_code"] == "UNAUTHENTICATED"
    with pytest.raises(NotFound):
        workspace.client().api_client.do("GET", "/api/2.0/no-such-api")


def test_the_server_listens_on_loopback_only_and_keeps_its_token_private(workspace: Workspace) -> None:
    info = workspace.server
    assert urlparse(info.url).hostname == "127.0.0.1"
    connections = psutil.Process(info.pid).net_connections(kind="inet")
    listening = [c.laddr for c in connections if c.status == psutil.CONN_LISTEN]
    assert listening and all(address.ip == "127.0.0.1" for address in listening), listening
    assert stat.S_IMODE(info_path(workspace.state_dir).stat().st_mode) == 0o600


def test_model_endpoint_lifecycle(workspace: Workspace) -> None:
    w = workspace.client()
    config = EndpointCoreConfigInput(name="tiny", **_model_config("1"))

    created = w.serving_endpoints.create_and_wait(name="tiny", config=config)

    assert created.state.ready == EndpointStateReady.READY
    assert created.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    [entity] = created.config.served_entities
    assert (entity.name, entity.entity_name, entity.entity_version) == ("tiny_model-1", MODEL, "1")
    assert entity.state.deployment == ServedModelStateDeployment.DEPLOYMENT_READY
    assert created.config.traffic_config.routes[0].traffic_percentage == 100
    assert created.pending_config is None and created.id and created.creation_timestamp
    assert w.serving_endpoints.get("tiny").config.config_version == 1
    listed = {e.name: e for e in w.serving_endpoints.list()}
    assert listed["tiny"].config.served_entities[0].entity_version == "1"

    records = X.head(3).to_dict(orient="records")
    expected = LogisticRegression().fit(X, Y).predict(X.head(3)).tolist()
    answers = [
        w.serving_endpoints.query("tiny", dataframe_records=records),
        w.serving_endpoints.query(
            "tiny",
            dataframe_split=DataframeSplitInput(columns=list(X.columns), data=X.head(3).values.tolist()),
        ),
        w.serving_endpoints.query("tiny", instances=records),
        w.serving_endpoints.query("tiny", inputs={c: X.head(3)[c].tolist() for c in X.columns}),
    ]
    for answer in answers:
        assert answer.predictions == expected
        assert answer.served_model_name == "tiny_model-1"

    w.serving_endpoints.delete("tiny")
    with pytest.raises(ResourceDoesNotExist):
        w.serving_endpoints.get("tiny")


def test_update_config_switches_versions_without_a_failed_request(workspace: Workspace) -> None:
    w = workspace.client()
    w.serving_endpoints.create_and_wait(
        name="rolling", config=EndpointCoreConfigInput(name="rolling", **_model_config("1"))
    )
    served: list[str] = []
    errors: list[Exception] = []
    done = threading.Event()

    def query_continuously() -> None:
        client = workspace.client()
        while not done.is_set():
            try:
                served.append(
                    client.serving_endpoints.query(
                        "rolling", dataframe_records=[{"x1": 1.0, "x2": 0.0}]
                    ).served_model_name
                )
            except Exception as err:  # noqa: BLE001 - every failure is the finding
                errors.append(err)

    thread = threading.Thread(target=query_continuously)
    thread.start()
    try:
        updated = w.serving_endpoints.update_config_and_wait("rolling", **_model_config("2"))
        after = w.serving_endpoints.query("rolling", dataframe_records=[{"x1": 1.0, "x2": 0.0}])
    finally:
        done.set()
        thread.join()

    assert not errors
    assert set(served) <= {"tiny_model-1", "tiny_model-2"} and served
    assert [e.entity_version for e in updated.config.served_entities] == ["2"]
    assert updated.config.config_version == 2 and updated.pending_config is None
    assert after.served_model_name == "tiny_model-2"

    split = w.serving_endpoints.update_config_and_wait("rolling", **_model_config("1", "2", split=[50, 50]))
    assert [(r.served_entity_name, r.traffic_percentage) for r in split.config.traffic_config.routes] == [
        ("tiny_model-1", 50),
        ("tiny_model-2", 50),
    ]
    names = {
        w.serving_endpoints.query("rolling", instances=[{"x1": 1.0, "x2": 0.0}]).served_model_name
        for _ in range(60)
    }
    assert names == {"tiny_model-1", "tiny_model-2"}  # 60 fair coin flips: both sides show up
    w.serving_endpoints.delete("rolling")


def test_feature_spec_endpoint_answers_like_feature_serving(workspace: Workspace) -> None:
    w = workspace.client()
    entity = ServedEntityInput(entity_name=SPEC, workload_size="Small", scale_to_zero_enabled=True)
    created = w.serving_endpoints.create_and_wait(
        name="customer-features",
        config=EndpointCoreConfigInput(name="customer-features", served_entities=[entity]),
    )
    assert created.config.served_entities[0].name == "customer_features"
    assert created.config.served_entities[0].entity_version is None

    answer = w.serving_endpoints.query(
        "customer-features", dataframe_records=[{"customer_id": 3}, {"customer_id": 9}]
    )

    assert answer.outputs == [
        {"customer_id": 3, "age": 67, "segment": "vip", "senior": True},
        {"customer_id": 9, "age": None, "segment": None, "senior": None},  # an unknown key: no features
    ]
    assert answer.served_model_name == "customer_features"

    raw = requests.post(
        f"{workspace.server.url}/serving-endpoints/customer-features/invocations",
        headers={"Authorization": f"Bearer {workspace.server.token}"},
        json={"dataframe_records": [{"customer_id": "3"}]},
        timeout=10,
    )
    assert raw.status_code == 200
    assert raw.headers["served-model-name"] == "customer_features"
    assert raw.json() == {"outputs": [{"customer_id": "3", "age": 67, "segment": "vip", "senior": True}]}

    split = w.serving_endpoints.query(
        "customer-features", dataframe_split=DataframeSplitInput(columns=["customer_id"], data=[["1"], [2]])
    )
    assert [row["segment"] for row in split.outputs] == ["new", "regular"]
    columns = w.serving_endpoints.query("customer-features", inputs={"customer_id": [2, 1]})
    assert [row["age"] for row in columns.outputs] == [41, 25]
    instances = w.serving_endpoints.query("customer-features", instances=[{"customer_id": 1}])
    assert instances.outputs == [{"customer_id": 1, "age": 25, "segment": "new", "senior": False}]
    with pytest.raises(BadRequest, match="customer_id"):
        w.serving_endpoints.query("customer-features", dataframe_records=[{"id": 1}])
    w.serving_endpoints.delete("customer-features")


# Keys that cannot be values of the integer key column customer_id, as raw JSON (NaN and 1e999 are what
# Python's json and many clients send for nan and inf).
BAD_KEYS = [
    '"abc"',
    '"1; DROP TABLE users"',
    '"\u0661\u0662"',
    '"\uff11\uff18\uff12"',
    "NaN",
    "1e999",
    "-Infinity",
    '"1.5"',
    "2.5",
    "true",
    "[1]",
    '{"a": 1}',
    "99999999999999999999999",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_lookup_key_that_is_not_of_the_key_type_is_a_400_naming_the_column(
    workspace: Workspace, key: str
) -> None:
    w = workspace.client()
    if not any(e.name == "keys" for e in w.serving_endpoints.list()):
        entity = ServedEntityInput(entity_name=SPEC, workload_size="Small", scale_to_zero_enabled=True)
        w.serving_endpoints.create_and_wait(
            name="keys", config=EndpointCoreConfigInput(name="keys", served_entities=[entity])
        )
    url = f"{workspace.server.url}/serving-endpoints/keys/invocations"
    headers = {"Authorization": f"Bearer {workspace.server.token}", "Content-Type": "application/json"}

    answer = requests.post(
        url, headers=headers, data=f'{{"dataframe_records": [{{"customer_id": {key}}}]}}', timeout=10
    )

    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "customer_id" in error["message"] and "must be an integer" in error["message"], error
    # A number sent as text that reads exactly as one still finds its row.
    found = requests.post(
        url, headers=headers, data=b'{"dataframe_records": [{"customer_id": " 2"}]}', timeout=10
    )
    assert found.status_code == 200 and found.json()["outputs"][0]["age"] == 41


def test_a_spec_over_an_unpublished_table_says_so(workspace: Workspace) -> None:
    w = workspace.client()
    entity = ServedEntityInput(
        entity_name=UNPUBLISHED_SPEC, workload_size="Small", scale_to_zero_enabled=True
    )
    w.serving_endpoints.create_and_wait(
        name="store-features", config=EndpointCoreConfigInput(name="store-features", served_entities=[entity])
    )

    with pytest.raises(BadRequest, match="main.default.stores is not published"):
        w.serving_endpoints.query("store-features", dataframe_records=[{"store_id": 1}])
    w.serving_endpoints.delete("store-features")


def test_errors_come_back_as_databricks_errors(workspace: Workspace) -> None:
    w = workspace.client()
    config = EndpointCoreConfigInput(name="strict", **_model_config("1"))
    w.serving_endpoints.create_and_wait(name="strict", config=config)

    with pytest.raises(ResourceAlreadyExists):
        w.serving_endpoints.create(name="strict", config=config)
    with pytest.raises(ResourceDoesNotExist):
        w.serving_endpoints.get("no-such-endpoint")
    with pytest.raises(NotFound):
        w.serving_endpoints.query("no-such-endpoint", dataframe_records=[{"x1": 1.0}])
    with pytest.raises(BadRequest, match="exactly one of"):
        w.serving_endpoints.query(
            "strict", dataframe_records=[{"x1": 1.0, "x2": 0.0}], instances=[[1.0, 0.0]]
        )
    with pytest.raises(BadRequest, match="x2"):  # the model's own complaint: a missing input column
        w.serving_endpoints.query("strict", dataframe_records=[{"x1": 1.0}])
    with pytest.raises(BadRequest, match="entity_version"):
        w.serving_endpoints.create(
            name="broken",
            config=EndpointCoreConfigInput(
                name="b", served_entities=[ServedEntityInput(entity_name=MODEL, entity_version="one")]
            ),
        )
    with pytest.raises(BadRequest, match="traffic_percentage"):
        w.serving_endpoints.update_config("strict", **_model_config("1", "2", split=[50, 60]))
    malformed = requests.post(
        f"{workspace.server.url}/serving-endpoints/strict/invocations",
        headers={"Authorization": f"Bearer {workspace.server.token}"},
        data=b"{not json",
        timeout=10,
    )
    assert malformed.status_code == 400 and malformed.json()["error_code"] == "INVALID_PARAMETER_VALUE"

    # A model version the registry does not hold fails at once, as on Databricks: no endpoint is made,
    # and an update to it leaves the endpoint as it was.
    with pytest.raises(ResourceDoesNotExist, match="Model version 99 of main.default.tiny_model"):
        w.serving_endpoints.create(
            name="missing-version",
            config=EndpointCoreConfigInput(name="missing-version", **_model_config("99")),
        )
    with pytest.raises(ResourceDoesNotExist):
        w.serving_endpoints.get("missing-version")
    with pytest.raises(ResourceDoesNotExist, match="served_entities\\[1\\]: Model version 99"):
        w.serving_endpoints.update_config("strict", **_model_config("1", "99", split=[50, 50]))
    strict = w.serving_endpoints.get("strict")
    assert (
        strict.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING and strict.pending_config is None
    )
    with pytest.raises(BadRequest, match="not a feature spec"):  # a spec that does not exist
        w.serving_endpoints.create(
            name="missing-spec",
            config=EndpointCoreConfigInput(
                name="missing-spec", served_entities=[ServedEntityInput(entity_name="main.default.nothing")]
            ),
        )
    w.serving_endpoints.delete("strict")


def test_endpoints_survive_a_server_restart(workspace: Workspace) -> None:
    w = workspace.client()
    w.serving_endpoints.create_and_wait(
        name="durable", config=EndpointCoreConfigInput(name="durable", **_model_config("2"))
    )
    old_pid = workspace.server.pid

    stop_server(workspace.state_dir)
    assert read_info(workspace.state_dir) is None
    new = ensure_server(workspace.state_dir)

    assert new.pid != old_pid
    w = workspace.client()
    assert w.serving_endpoints.get("durable").config.served_entities[0].entity_version == "2"
    # The first request waits for the model to load again, as a scaled-to-zero endpoint does.
    answer = w.serving_endpoints.query("durable", dataframe_records=[{"x1": 5.0, "x2": 0.0}])
    assert answer.predictions == [1] and answer.served_model_name == "tiny_model-2"
