"""A served lookup model answers what its pyfunc answers, whichever path the server takes for a request.

The server reads requests whose values already have their schema types straight into columns and looks
their features up column by column; any other request goes through MLflow's parser. Random requests in each
input format (unknown keys, request-time values, values of the wrong type, missing and extra columns) are
sent to a real server one at a time, and concurrently so that they share batches; each answer must be
exactly the plain pyfunc's (``mlflow.pyfunc.load_model(...).predict`` of what MLflow's scoring server
parses), and a request the pyfunc rejects must be answered 400.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle
import mlflow
import pandas as pd
import pytest
import requests
from databricks.feature_engineering import FeatureFunction, FeatureLookup
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import EndpointCoreConfigInput, ServedEntityInput
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from mlflow.utils.proto_json_utils import _get_jsonable_obj

from helpers import platform
from helpers.local.server.predictors import encode_answer
from helpers.local.server.process import running_server

MODEL = "main.eq.reveal_model"
ENDPOINT = "reveal"
CUSTOMERS = range(1, 41)  # keys 41 and up are unknown
MERCHANTS = ["m1", "m2", "m3"]
T = pd.Timestamp


class Reveal(mlflow.pyfunc.PythonModel):
    """Answers every input value and the frame's dtypes: any difference in what reached it shows."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:
        dtypes = ",".join(f"{c}:{t}" for c, t in model_input.dtypes.items())
        seen = [json.dumps(row, default=repr) for row in model_input.to_dict(orient="records")]
        return pd.DataFrame({"seen": seen, "dtypes": dtypes})


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the model process does not import the tests


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Any]]:
    state = tmp_path_factory.mktemp("eq_state")
    patch = pytest.MonkeyPatch()
    patch.setenv("HELPERS_STATE_DIR", str(state))
    platform.settings(state_dir=state)
    fe = platform.feature_engineering_client()
    fe.create_table(
        name="main.eq.customers",
        primary_keys=["customer_id", "as_of"],
        timeseries_column="as_of",
        df=pd.DataFrame(
            {
                "customer_id": list(CUSTOMERS),
                "as_of": [T("2025-01-01")] * len(CUSTOMERS),
                "spend": [float(i) * 1.5 if i % 7 else None for i in CUSTOMERS],
                "visits": [i % 5 for i in CUSTOMERS],
                "segment": ["gold" if i % 3 else "basic" for i in CUSTOMERS],
            }
        ),
    )
    fe.create_table(
        name="main.eq.merchants",
        primary_keys=["merchant"],
        df=pd.DataFrame({"merchant": MERCHANTS[:2], "risk": [0.25, 0.5]}),  # m3 is unknown
    )
    platform.create_python_function(
        "main.eq.per_visit", {"a": "DOUBLE", "v": "BIGINT"}, "DOUBLE", "return a / (v + 1)"
    )
    labels = pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "merchant": ["m1", "m2", "m1"],
            "amount": [1.0, 2.5, 3.0],
            "hour": [1, 12, 23],
            "channel": ["web", "app", "web"],
            "online": [True, False, True],
            "ts": [T("2025-02-01")] * 3,
            "y": [0, 1, 0],
        }
    )
    training_set = fe.create_training_set(
        df=labels,
        feature_lookups=[
            FeatureLookup(
                table_name="main.eq.customers",
                lookup_key="customer_id",
                timestamp_lookup_key="ts",
                feature_names=["spend", "visits", "segment"],
                default_values={"spend": -1.0},
            ),
            FeatureLookup(
                table_name="main.eq.merchants",
                lookup_key="merchant",
                feature_names=["risk"],
                rename_outputs={"risk": "merchant_risk"},
            ),
            FeatureFunction(
                udf_name="main.eq.per_visit",
                input_bindings={"a": "amount", "v": "visits"},
                output_name="amount_per_visit",
            ),
        ],
        label="y",
        exclude_columns=["ts"],
    )
    info = fe.log_model(
        model=Reveal(),
        artifact_path="model",
        flavor=mlflow.pyfunc,
        training_set=training_set,
        registered_model_name=MODEL,
        infer_input_example=True,
    )
    store = fe.create_online_store(name="store", capacity="CU_1")
    for table in ("main.eq.customers", "main.eq.merchants"):
        fe._tables.set_properties(table, {"delta.enableChangeDataFeed": "true"})
        fe.publish_table(online_store=store, source_table_name=table, online_table_name=f"{table}_online")
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{info.registered_model_version}")
    with running_server(state) as server:
        w = WorkspaceClient(host=server.url, token=server.token, auth_type="pat")
        entity = ServedEntityInput(entity_name=MODEL, entity_version=info.registered_model_version)
        w.serving_endpoints.create_and_wait(
            ENDPOINT, config=EndpointCoreConfigInput(name=ENDPOINT, served_entities=[entity])
        )
        url = f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"
        yield url, {"Authorization": f"Bearer {server.token}"}, pyfunc
    patch.undo()


def _value(rng: random.Random, column: str, clean: bool, known: bool) -> Any:
    """A request value: of the column's schema type if ``clean``, else sometimes of another type; only keys
    whose every feature is found if ``known``."""
    typed = {
        "customer_id": lambda: rng.choice([1, 2, 3, 4, 5, 6, 8] if known else [*CUSTOMERS, 41, 977, -3]),
        "merchant": lambda: rng.choice(MERCHANTS[:2] if known else MERCHANTS),
        "amount": lambda: rng.choice([rng.uniform(-50, 500), rng.randint(0, 90), 0.0]),
        "hour": lambda: rng.randint(0, 23),
        "channel": lambda: rng.choice(["web", "app", "pos", "été"]),
        "online": lambda: rng.random() < 0.5,
    }
    if clean or rng.random() < 0.8:
        return typed[column]()
    return rng.choice([None, "12", 3.0, 2.5, True, "web", [1], 1e300, 2**70])


def _request(rng: random.Random, columns: list[str], clean: bool, known: bool = False) -> dict[str, Any]:
    """A random request body in a random input format."""
    n = rng.randint(1, 4)
    rows = [{c: _value(rng, c, clean, known) for c in columns} for _ in range(n)]
    if not clean:
        for row in rows:
            if rng.random() < 0.1:
                row.pop(rng.choice(columns))  # a missing column
            if rng.random() < 0.1:
                row["spend"] = 99.0  # a request-time value for a looked-up feature
    fmt = rng.choice(["dataframe_records", "dataframe_split", "instances", "inputs"])
    names = list(rows[0])
    rng.shuffle(names)
    if fmt == "dataframe_split":
        return {fmt: {"columns": names, "data": [[r.get(c) for c in names] for r in rows]}}
    if fmt == "inputs":
        shape = rng.choice(["columns", "records", "one row"])
        if shape == "one row":
            return {fmt: rows[0]}
        if shape == "records":
            return {fmt: rows}
        return {fmt: {c: [r.get(c) for r in rows] for c in names}}
    return {fmt: rows}


def _pyfunc_answer(pyfunc: Any, body: dict[str, Any]) -> dict[str, Any] | None:
    """What ``mlflow models serve`` answers: MLflow's parsing, then ``predict``; ``None`` if it refuses."""
    try:
        data = infer_and_parse_data(body, pyfunc.metadata.get_input_schema())
        prediction = pyfunc.predict(data)
    except Exception:
        return None
    return json.loads(encode_answer({"predictions": _get_jsonable_obj(prediction, pandas_orient="records")}))


def _check(url: str, headers: dict[str, str], pyfunc: Any, body: dict[str, Any]) -> None:
    answer = requests.post(url, json=body, headers=headers, timeout=60)
    expected = _pyfunc_answer(pyfunc, body)
    if expected is None:
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), answer.text
    else:
        assert answer.status_code == 200, (body, answer.text)
        assert answer.json() == expected, body


def test_answers_are_the_pyfuncs_for_random_requests_of_every_format(served) -> None:
    url, headers, pyfunc = served
    columns = pyfunc.metadata.get_input_schema().input_names()
    assert sorted(columns) == sorted(["customer_id", "merchant", "amount", "hour", "channel", "online"])
    rng = random.Random(19)
    for i in range(240):
        _check(url, headers, pyfunc, _request(rng, columns, clean=i % 2 == 0))


def test_answers_are_the_pyfuncs_when_requests_share_batches(served) -> None:
    url, headers, pyfunc = served
    columns = pyfunc.metadata.get_input_schema().input_names()
    rng = random.Random(20)
    # Every feature found: a column's dtype, and so the answer, then does not depend on a batch's other rows.
    bodies = [_request(rng, columns, clean=True, known=True) for _ in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda body: _check(url, headers, pyfunc, body), bodies))
