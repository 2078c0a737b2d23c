"""A served model's replica: a process of its own; concurrent requests share one predict, answered each.

The replica is supervised: killed, crashed or past its execution limit, it is started again by itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle
import fresh_state
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.models import infer_signature
from polling import wait_for

from helpers.local.server.errors import ApiError, ModelLoadError
from helpers.local.server.layout import mlflow_uri
from helpers.local.server.model_processes import ModelReplica


class Doubler(mlflow.pyfunc.PythonModel):
    """Doubles x. Logs each batch's x values to a file; x == 0 holds the model until the gate file exists.

    x == -2 hangs; x == -3 answers what cannot be pickled (the replica dies sending it); while the hold file
    exists, a replica does not finish loading.
    """

    def __init__(self, gate: str, batches: str, hold: str) -> None:
        self.gate, self.batches, self.hold = gate, batches, hold

    def load_context(self, context: Any) -> None:
        deadline = time.monotonic() + 120
        while Path(self.hold).exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:
        with open(self.batches, "a") as log:
            log.write(json.dumps(model_input["x"].tolist()) + "\n")
        if (model_input["x"] == 0).any():
            deadline = time.monotonic() + 60
            while not Path(self.gate).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        if (model_input["x"] == -2).any():
            time.sleep(3600)
        if (model_input["x"] == -3).any():
            return [threading.Lock()]
        if (model_input["x"] < 0).any():
            raise ValueError("x must not be negative")
        return model_input["x"] * 2  # a Series: MLflow answers it as records, [{"x": ...}, ...]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = Path(tmp_path_factory.mktemp("model"))
    with pytest.MonkeyPatch.context() as patch:  # saving a model opens MLflow's store: this module's own
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_uri(fresh_state.seed(root / "state")))
        yield {
            "model": root / "doubler",
            "gate": root / "gate",
            "batches": root / "batches.jsonl",
            "hold": root / "hold-load",
        }


@pytest.fixture(scope="module")
def replica(files: dict[str, Path]) -> ModelReplica:
    example = pd.DataFrame({"x": [1.0, 2.0]})
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replica does not import the tests
    model = Doubler(str(files["gate"]), str(files["batches"]), str(files["hold"]))
    signature = infer_signature(example, example["x"] * 2)
    mlflow.pyfunc.save_model(str(files["model"]), python_model=model, signature=signature)
    replica = ModelReplica(str(files["model"]))
    yield replica
    replica.close()


def _batches(files: dict[str, Path]) -> list[list[float]]:
    if not files["batches"].exists():
        return []
    return [json.loads(line) for line in files["batches"].read_text().splitlines()]


def _answer(*values: float) -> dict[str, Any]:
    return {"predictions": [{"x": v} for v in values]}


def _while_the_model_is_held(
    replica: ModelReplica, files: dict[str, Path], bodies: list[tuple[str, Any]]
) -> list[Future]:
    """Send x == 0 (it holds the model), queue ``bodies`` behind it, then let the model go."""
    files["gate"].unlink(missing_ok=True)
    files["batches"].unlink(missing_ok=True)
    pool = ThreadPoolExecutor(max_workers=len(bodies) + 1)
    first = pool.submit(replica, "dataframe_records", [{"x": 0.0}], None)
    while not _batches(files):
        time.sleep(0.01)
    futures = [pool.submit(replica, fmt, payload, None) for fmt, payload in bodies]
    while len(replica._queue) < len(bodies):  # every request waits behind the held one
        time.sleep(0.01)
    files["gate"].touch()
    assert first.result(60) == _answer(0.0)
    pool.shutdown(wait=True)
    return futures


def test_queued_requests_are_scored_in_one_predict_and_answered_each(
    replica: ModelReplica, files: dict[str, Path]
) -> None:
    bodies = [("dataframe_records", [{"x": float(i)}, {"x": float(10 * i)}]) for i in range(1, 6)]
    futures = _while_the_model_is_held(replica, files, bodies)

    assert [f.result() for f in futures] == [_answer(2.0 * i, 20.0 * i) for i in range(1, 6)]
    batches = _batches(files)
    assert batches[0] == [0.0] and len(batches) == 2  # the held request, then one batch of all the rest
    assert sorted(batches[1]) == sorted(x for _, rows in bodies for x in (r["x"] for r in rows))


def test_a_failing_request_in_a_batch_gets_its_own_error_and_the_others_their_answers(
    replica: ModelReplica, files: dict[str, Path]
) -> None:
    bodies = [
        ("dataframe_records", [{"x": 1.0}]),
        ("dataframe_records", [{"x": -1.0}]),
        ("dataframe_records", [{"x": 3.0}]),
        ("dataframe_split", {"columns": ["x"], "data": [[4.0]]}),  # another format: scored alone
    ]
    futures = _while_the_model_is_held(replica, files, bodies)

    assert futures[0].result() == _answer(2.0)
    with pytest.raises(ApiError) as error:
        futures[1].result()
    assert error.value.status == 400 and "x must not be negative" in error.value.message
    assert futures[2].result() == _answer(6.0)
    assert futures[3].result() == _answer(8.0)


def test_a_model_that_cannot_load_says_why(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="MlflowException|OSError|No such file"):
        ModelReplica(str(tmp_path / "no-model-here"))


def _error(future: Future) -> ApiError:
    with pytest.raises(ApiError) as error:
        future.result(120)
    return error.value


def test_a_killed_replica_answers_503_while_it_recovers_then_answers_again(
    replica: ModelReplica, files: dict[str, Path]
) -> None:
    doomed = ModelReplica(str(files["model"]))  # a second replica of the same model
    assert doomed("dataframe_records", [{"x": 2.0}], None) == _answer(4.0)
    files["gate"].unlink(missing_ok=True)
    files["batches"].unlink(missing_ok=True)
    pool = ThreadPoolExecutor(max_workers=1)
    held = pool.submit(doomed, "dataframe_records", [{"x": 0.0}], None)
    wait_for(lambda: _batches(files), "the replica to hold the request")
    files["hold"].touch()  # the new replica will not finish loading until the test says so
    killed = doomed.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)

    error = _error(held)  # the request in flight fails, and says to try again
    assert (error.status, error.error_code) == (503, "TEMPORARILY_UNAVAILABLE"), error.message
    wait_for(lambda: doomed.health() is not None, "the replica to show it recovers")
    state, message = doomed.health() or ("", "")
    assert state == "DEPLOYMENT_RECOVERING" and "exit code -9" in message
    with pytest.raises(ApiError) as refused:  # while down: 503 at once, nothing queued behind a dead process
        doomed("dataframe_records", [{"x": 2.0}], None)
    assert refused.value.status == 503
    assert replica("dataframe_records", [{"x": 2.0}], None) == _answer(4.0)  # the other one is unharmed

    files["hold"].unlink()
    wait_for(lambda: doomed.health() is None, "the replica to run again")
    assert doomed("dataframe_records", [{"x": 2.0}], None) == _answer(4.0)
    assert doomed.restarts == 1 and doomed.pid not in (None, killed)
    files["gate"].touch()
    pool.shutdown()
    doomed.close()


def test_a_request_past_the_execution_limit_is_a_504_and_holds_no_other_replica(
    replica: ModelReplica, files: dict[str, Path]
) -> None:
    slow = ModelReplica(str(files["model"]), execution_limit=2.0)
    files["batches"].unlink(missing_ok=True)
    pool = ThreadPoolExecutor(max_workers=1)
    hung = pool.submit(slow, "dataframe_records", [{"x": -2.0}], None)
    wait_for(lambda: [-2.0] in _batches(files), "the model to hang")

    assert replica("dataframe_records", [{"x": 3.0}], None) == _answer(6.0)  # another model answers meanwhile
    error = _error(hung)
    assert (error.status, error.error_code) == (504, "DEADLINE_EXCEEDED") and "2 s" in error.message
    wait_for(lambda: slow.restarts == 1 and slow.health() is None, "the hung replica to be replaced")
    assert slow("dataframe_records", [{"x": 2.0}], None) == _answer(4.0)
    pool.shutdown()
    slow.close()


def test_a_replica_that_dies_outside_the_request_guard_is_restarted(files: dict[str, Path]) -> None:
    fragile = ModelReplica(str(files["model"]))

    with pytest.raises(ApiError) as error:  # the answer cannot be sent back: the replica's process dies
        fragile("dataframe_records", [{"x": -3.0}], None)

    assert error.value.status == 503
    wait_for(lambda: fragile.restarts == 1 and fragile.health() is None, "the replica to run again")
    assert fragile("dataframe_records", [{"x": 2.0}], None) == _answer(4.0)
    fragile.close()
