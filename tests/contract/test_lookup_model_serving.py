"""A model logged with a training set, served two ways: the local server and ``mlflow models serve``.

Both answer from keys plus request-time values; the features come from the online store, so a re-published
feature value changes the answer without redeploying, and an unknown key falls back to ``default_values``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import fresh_state
import mlflow
import pandas as pd
import pytest
import requests
from databricks.feature_engineering import FeatureFunction, FeatureLookup
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest
from databricks.sdk.service.serving import EndpointCoreConfigInput, ServedEntityInput

from helpers import platform
from helpers.local.server.process import running_server

MODEL = "main.s.spend_model"
T = pd.Timestamp


class SpendModel(mlflow.pyfunc.PythonModel):
    """Predicts exactly its inputs' sum, so each answer reveals which feature values were looked up."""

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return (model_input["amount"] + model_input["spend"] + model_input["ratio"]).tolist()


# The server process cannot import this test module: pickle the model class by value, as for a notebook's.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    state = fresh_state.seed(tmp_path_factory.mktemp("lookup_state"))
    patch = pytest.MonkeyPatch()
    patch.setenv("HELPERS_STATE_DIR", str(state))
    platform.settings(state_dir=state)
    fe = platform.feature_engineering_client()
    snapshots = pd.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "as_of": [T("2025-01-01"), T("2025-01-08"), T("2025-01-01")],
            "spend": [10.0, 20.0, 5.0],
        }
    )
    fe.create_table(
        name="main.s.cf", primary_keys=["customer_id", "as_of"], timeseries_column="as_of", df=snapshots
    )
    platform.create_python_function("main.s.ratio", {"a": "DOUBLE", "b": "DOUBLE"}, "DOUBLE", "return a / b")
    labels = pd.DataFrame(
        {"customer_id": [1, 2], "ts": [T("2025-01-09")] * 2, "amount": [1.0, 2.0], "y": [0, 1]}
    )
    training_set = fe.create_training_set(
        df=labels,
        feature_lookups=[
            FeatureLookup(
                table_name="main.s.cf",
                lookup_key="customer_id",
                timestamp_lookup_key="ts",
                feature_names=["spend"],
                default_values={"spend": 100.0},
            ),
            FeatureFunction(
                udf_name="main.s.ratio", input_bindings={"a": "amount", "b": "spend"}, output_name="ratio"
            ),
        ],
        label="y",
        exclude_columns=["customer_id", "ts"],
    )
    info = fe.log_model(
        model=SpendModel(),
        artifact_path="model",
        flavor=mlflow.pyfunc,
        training_set=training_set,
        registered_model_name=MODEL,
        infer_input_example=True,
    )
    store = fe.create_online_store(name="store", capacity="CU_1")
    fe._tables.set_properties("main.s.cf", {"delta.enableChangeDataFeed": "true"})
    fe.publish_table(online_store=store, source_table_name="main.s.cf", online_table_name="main.s.cf_online")
    yield state, fe, info.registered_model_version
    patch.undo()


def test_endpoint_looks_features_up_online(registered) -> None:
    state, fe, version = registered
    with running_server(state) as server:
        w = WorkspaceClient(host=server.url, token=server.token, auth_type="pat")
        entity = ServedEntityInput(entity_name=MODEL, entity_version=version)
        config = EndpointCoreConfigInput(name="spend", served_entities=[entity])
        w.serving_endpoints.create_and_wait("spend", config=config)
        rows = [
            {"customer_id": 1, "amount": 2.0},
            {"customer_id": 2, "amount": 1.0},
            {"customer_id": 7, "amount": 50.0},
        ]
        answer = w.serving_endpoints.query("spend", dataframe_records=rows)
        # latest snapshot of 1 is 20, of 2 is 5; unknown 7 gets the default 100
        assert answer.predictions == pytest.approx([2 + 20 + 0.1, 1 + 5 + 0.2, 50 + 100 + 0.5])
        assert answer.served_model_name == f"spend_model-{version}"

        fe.write_table(
            name="main.s.cf",
            df=pd.DataFrame({"customer_id": [2], "as_of": [T("2025-01-15")], "spend": [50.0]}),
        )
        store = fe.get_online_store(name="store")
        fe.publish_table(
            online_store=store, source_table_name="main.s.cf", online_table_name="main.s.cf_online"
        )
        answer = w.serving_endpoints.query("spend", dataframe_records=rows[1:2])
        assert answer.predictions == pytest.approx([1 + 50 + 0.02]), (
            "a re-publish is served without redeploying"
        )

        with pytest.raises(BadRequest, match="amount"):
            w.serving_endpoints.query("spend", dataframe_records=[{"customer_id": 1}])

        # No online table, no offline fallback (as on Databricks): the request fails naming the table.
        fe.drop_online_table("main.s.cf_online", store)
        with pytest.raises(BadRequest, match=r"main\.s\.cf is not published.*fe\.publish_table"):
            w.serving_endpoints.query("spend", dataframe_records=rows[:1])
        fe.publish_table(
            online_store=store, source_table_name="main.s.cf", online_table_name="main.s.cf_online"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_same_model_works_under_mlflow_models_serve(registered) -> None:
    state, _, version = registered
    port = _free_port()
    env = {
        **os.environ,
        "HELPERS_STATE_DIR": str(state),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # mlflow execs `uvicorn`
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{MODEL}/{version}",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            time.sleep(0.5)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={
                "dataframe_records": [{"customer_id": 1, "amount": 2.0}, {"customer_id": 9, "amount": 10.0}]
            },
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == pytest.approx([2 + 20 + 0.1, 10 + 100 + 0.1])
    finally:
        process.terminate()
        process.wait(timeout=30)
