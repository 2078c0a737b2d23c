"""Supervised model replicas, through a real server process: a replica killed under load comes back by
itself, and a model that hangs is answered with a timeout while other endpoints keep answering.

The probe model answers its replica's pid (so the test knows which process to kill), hangs for x < 0, and
does not finish loading while a hold file exists (so the test can look at an endpoint while it recovers).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import fresh_state
import mlflow
import pandas as pd
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import (
    EndpointCoreConfigInput,
    EndpointStateReady,
    ServedEntityInput,
    ServedModelStateDeployment,
)
from polling import wait_for
from workspace import Workspace as LocalWorkspace

from helpers.local.server.layout import mlflow_artifacts, mlflow_uri
from helpers.local.server.process import running_server
from helpers.local.server.registry import EXECUTION_LIMIT_ENV

MODEL = "main.supervision.probe"
LIMIT_SECONDS = 5


class Probe(mlflow.pyfunc.PythonModel):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def load_context(self, context: Any) -> None:
        deadline = time.monotonic() + 120
        while (Path(self.folder) / "hold-load").exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:
        if (model_input["x"] < 0).any():
            (Path(self.folder) / "hanging").touch()
            time.sleep(3600)
        return [os.getpid()] * len(model_input)


@dataclass(frozen=True)
class Workspace(LocalWorkspace):
    """The server, plus plain-HTTP calls and a switch that holds the test load."""

    def post(self, endpoint: str, x: float, session: Any = requests) -> requests.Response:
        return session.post(
            f"{self.server.url}/serving-endpoints/{endpoint}/invocations",
            headers={"Authorization": f"Bearer {self.server.token}"},
            json={"dataframe_records": [{"x": x}]},
            timeout=120,
        )

    @property
    def hold(self) -> Path:
        return self.state_dir / "hold-load"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    state_dir = fresh_state.seed(tmp_path_factory.mktemp("supervision"))
    patch = pytest.MonkeyPatch()
    patch.setenv("HELPERS_STATE_DIR", str(state_dir))
    patch.setenv(EXECUTION_LIMIT_ENV, str(LIMIT_SECONDS))
    mlflow.set_tracking_uri(mlflow_uri(state_dir))  # also exported, so the server uses the same registry
    mlflow.set_registry_uri(mlflow_uri(state_dir))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replica does not import the tests
    try:
        experiment = mlflow.create_experiment("probe", artifact_location=mlflow_artifacts(state_dir).as_uri())
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pyfunc.log_model(
                name="model",
                python_model=Probe(str(state_dir)),
                registered_model_name=MODEL,
                pip_requirements=["mlflow"],  # skips inferring them (a subprocess per model)
            )
        with running_server(state_dir):
            workspace = Workspace(state_dir)
            w = workspace.client()
            for name in ("probe", "other"):
                entity = ServedEntityInput(entity_name=MODEL, entity_version="1", scale_to_zero_enabled=True)
                config = EndpointCoreConfigInput(name=name, served_entities=[entity])
                w.serving_endpoints.create_and_wait(name=name, config=config)
            yield workspace
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        patch.undo()


def _deployment(w: WorkspaceClient, name: str) -> ServedModelStateDeployment | None:
    [entity] = w.serving_endpoints.get(name).config.served_entities
    return entity.state.deployment


def test_a_replica_killed_under_load_recovers_by_itself(workspace: Workspace) -> None:
    w = workspace.client()
    killed = workspace.post("probe", 1.0).json()["predictions"][0]
    outcomes: list[tuple[float, int, str | None]] = []  # (sent at, status, error code)
    stop = threading.Event()

    def load() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                sent = time.monotonic()
                answer = workspace.post("probe", 1.0, session)
                outcomes.append((sent, answer.status_code, answer.json().get("error_code")))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(outcomes) >= 20, "requests under load")
        workspace.hold.touch()  # the new replica does not finish loading until the hold file goes
        os.kill(killed, signal.SIGKILL)

        wait_for(
            lambda: _deployment(w, "probe") == ServedModelStateDeployment.DEPLOYMENT_RECOVERING,
            "the endpoint to show its replica recovering",
        )
        assert w.serving_endpoints.get("probe").state.ready == EndpointStateReady.NOT_READY
        down = workspace.post("probe", 1.0)  # plain HTTP: the SDK would retry a 503 itself
        outcomes.append((time.monotonic(), down.status_code, down.json().get("error_code")))
        assert down.status_code == 503 and down.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert workspace.post("other", 1.0).status_code == 200  # the other endpoint's replica is unharmed

        workspace.hold.unlink()
        wait_for(
            lambda: _deployment(w, "probe") == ServedModelStateDeployment.DEPLOYMENT_READY,
            "the replica to run again",
        )
        recovered = time.monotonic()
        wait_for(
            lambda: sum(1 for sent, status, _ in list(outcomes) if sent > recovered and status == 200) >= 40,
            "requests after the recovery",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)

    failed = [(sent, status, code) for sent, status, code in outcomes if status != 200]
    print(f"\n{len(outcomes)} requests, {len(failed)} failed while the replica was down")
    assert failed and {(status, code) for _, status, code in failed} == {(503, "TEMPORARILY_UNAVAILABLE")}
    assert not [sent for sent, _, _ in failed if sent > recovered]  # none after the recovery
    assert w.serving_endpoints.get("probe").state.ready == EndpointStateReady.READY
    assert workspace.post("probe", 1.0).json()["predictions"][0] != killed  # a new process


def test_a_hanging_model_times_out_while_another_endpoint_answers(workspace: Workspace) -> None:
    w = workspace.client()
    (workspace.state_dir / "hanging").unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        hung = pool.submit(workspace.post, "probe", -1.0)
        wait_for(lambda: (workspace.state_dir / "hanging").exists(), "the model to hang")

        other = workspace.post("other", 1.0)
        assert other.status_code == 200 and not hung.done()  # answered while the other one hangs

        answer = hung.result(120)
    assert answer.status_code == 504, answer.text
    assert answer.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert f"{LIMIT_SECONDS} s" in answer.json()["message"]
    wait_for(
        lambda: (
            _deployment(w, "probe") == ServedModelStateDeployment.DEPLOYMENT_READY
            and workspace.post("probe", 1.0).status_code == 200
        ),
        "the hung replica to be replaced",
    )
