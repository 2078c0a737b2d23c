"""Micro-batching of a served model: concurrent requests scored in one predict, each answered on its own."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.models import infer_signature

from helpers.local.server.errors import ApiError
from helpers.local.server.model_serving import ModelPredictor

GATE = threading.Event()  # a request for x == 0 holds the model until the test opens the gate
BATCHES: list[list[float]] = []  # the x values of every predict call


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:
        BATCHES.append(model_input["x"].tolist())
        if (model_input["x"] == 0).any():
            GATE.wait(60)
        if (model_input["x"] < 0).any():
            raise ValueError("x must not be negative")
        return model_input["x"] * 2  # a Series: MLflow answers it as records, [{"x": ...}, ...]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> ModelPredictor:
    path = Path(tmp_path_factory.mktemp("model")) / "doubler"
    example = pd.DataFrame({"x": [1.0, 2.0]})
    signature = infer_signature(example, example["x"] * 2)
    mlflow.pyfunc.save_model(str(path), python_model=Doubler(), signature=signature)
    return ModelPredictor(mlflow.pyfunc.load_model(str(path)))


def _answer(*values: float) -> dict[str, Any]:
    return {"predictions": [{"x": v} for v in values]}


def _while_the_model_is_held(predictor: ModelPredictor, bodies: list[tuple[str, Any]]) -> list[Future]:
    """Send x == 0 (it holds the model), queue ``bodies`` behind it, then let the model go."""
    GATE.clear()
    BATCHES.clear()
    pool = ThreadPoolExecutor(max_workers=len(bodies) + 1)
    first = pool.submit(predictor, "dataframe_records", [{"x": 0.0}], None)
    while not BATCHES:
        time.sleep(0.01)
    futures = [pool.submit(predictor, fmt, payload, None) for fmt, payload in bodies]
    while len(predictor._queue) < len(bodies):  # every request waits behind the held one
        time.sleep(0.01)
    GATE.set()
    assert first.result(60) == _answer(0.0)
    pool.shutdown(wait=True)
    return futures


def test_queued_requests_are_scored_in_one_predict_and_answered_each(predictor: ModelPredictor) -> None:
    bodies = [("dataframe_records", [{"x": float(i)}, {"x": float(10 * i)}]) for i in range(1, 6)]
    futures = _while_the_model_is_held(predictor, bodies)

    assert [f.result() for f in futures] == [_answer(2.0 * i, 20.0 * i) for i in range(1, 6)]
    assert BATCHES[0] == [0.0] and len(BATCHES) == 2  # the held request, then one batch of all the rest
    assert sorted(BATCHES[1]) == sorted(x for _, rows in bodies for x in (r["x"] for r in rows))


def test_a_failing_request_in_a_batch_gets_its_own_error_and_the_others_their_answers(
    predictor: ModelPredictor,
) -> None:
    bodies = [
        ("dataframe_records", [{"x": 1.0}]),
        ("dataframe_records", [{"x": -1.0}]),
        ("dataframe_records", [{"x": 3.0}]),
        ("dataframe_split", {"columns": ["x"], "data": [[4.0]]}),  # another format: scored alone
    ]
    futures = _while_the_model_is_held(predictor, bodies)

    assert futures[0].result() == _answer(2.0)
    with pytest.raises(ApiError) as error:
        futures[1].result()
    assert error.value.status == 400 and "x must not be negative" in error.value.message
    assert futures[2].result() == _answer(6.0)
    assert futures[3].result() == _answer(8.0)
