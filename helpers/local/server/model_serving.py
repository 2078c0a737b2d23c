"""Served MLflow models: each in a process of its own, requests parsed as MLflow's scoring server does.

Databricks serves a model in a container of its own; the local twin gives each loaded model version a
process of its own (a replica), forked from a fork server that has MLflow and pandas imported already.
The server's event loop never scores. A request is queued for its replica; one dispatcher thread per
replica sends everything queued as one batch whenever the replica is free, and each request is answered
when its batch comes back. So the server's core handles HTTP while the replica's core scores, and
concurrent requests share one ``predict``: profiling showed that parsing into pandas and one ``predict``
of a small model cost about as much for 8 rows as for 1, and that with scoring in the server process one
core did all the work while the other sat idle.

In a batch, ``dataframe_records`` requests with the same columns and ``params``, for a model with an input
schema (which fixes the column types), are parsed and scored in one ``predict`` call and the answer is
split back by rows; any other request is answered alone. A batch that fails, or whose answer is not one
prediction per row, is answered again request by request, so each request gets its own answer or error.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future
from itertools import pairwise
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from mlflow.utils.proto_json_utils import _get_jsonable_obj
from threadpoolctl import threadpool_limits

from helpers.local.server.errors import ApiError, ModelLoadError, bad_request
from helpers.local.server.serving import MODEL_ERROR, Predictor, model_error

log = logging.getLogger(__name__)

Invocation = tuple[str, Any, "dict[str, Any] | None"]  # input format, payload, params
Outcome = tuple[bool, Any]  # (True, the answer) or (False, (status, error_code, message))
# What a replica's process inherits: where the workspace's state and MLflow's registry are.
INHERITED_ENV = ("HELPERS_STATE_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
LOAD_TIMEOUT_SECONDS = 600.0
GATHER_SECONDS = 0.001  # the longest a free replica waits for requests to join a batch
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


class ModelScorer:
    """An MLflow pyfunc model that answers a batch of invocations, each with its own answer or error."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._schema = model.metadata.get_input_schema()

    def answer(self, invocations: list[Invocation]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(invocations)
        pending = list(range(len(invocations)))
        while pending:
            first = pending[0]
            columns = _columns(invocations[first])
            group = [first]
            if self._schema is not None and columns is not None:
                params = invocations[first][2]
                group += [
                    i
                    for i in pending[1:]
                    if invocations[i][2] == params and _columns(invocations[i]) == columns
                ]
            pending = [i for i in pending if i not in group]
            results = self._predict_batch([invocations[i] for i in group]) if len(group) > 1 else None
            for n, i in enumerate(group):
                if results is not None:
                    outcomes[i] = (True, _answer(results[n]))
                    continue
                try:
                    outcomes[i] = (True, _answer(self._predict(*invocations[i])))
                except ApiError as err:
                    outcomes[i] = (False, (err.status, err.error_code, err.message))
        return [o for o in outcomes if o is not None]

    def _predict_batch(self, group: list[Invocation]) -> list[Any] | None:
        """One answer per invocation from one parse and one ``predict``; ``None`` if they cannot be had so."""
        sizes = [len(payload) for _, payload, _ in group]
        try:
            rows = [row for _, payload, _ in group for row in payload]
            output = self._predict("dataframe_records", rows, group[0][2])
        except ApiError:  # each invocation is answered alone, and gets its own error
            return None
        if not isinstance(output, (np.ndarray, pd.Series, pd.DataFrame, list)) or len(output) != sum(sizes):
            return None
        bounds = list(pairwise(np.cumsum([0, *sizes]).tolist()))
        if isinstance(output, (pd.Series, pd.DataFrame)):
            return [output.iloc[a:b] for a, b in bounds]
        return [output[a:b] for a, b in bounds]

    def _predict(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> Any:
        try:
            data = infer_and_parse_data({input_format: payload}, self._schema)
        except MlflowException as err:
            raise bad_request(err.message) from None
        except Exception as err:  # the parser trips over some shapes (unhashable column names, ...)
            raise bad_request(f"{input_format} cannot be read: {type(err).__name__}: {err}") from None
        try:
            return self._model.predict(data, params=params)
        except MlflowException as err:
            raise model_error(err.message) from None
        except Exception as err:  # the model's own failure is the caller's 400, as on Databricks
            raise model_error(MODEL_ERROR.format(error=err)) from None


def _columns(invocation: Invocation) -> tuple[str, ...] | None:
    """The columns of a ``dataframe_records`` invocation whose rows all have the same ones, else None."""
    input_format, rows, _ = invocation
    if input_format != "dataframe_records" or not isinstance(rows, list) or not rows:
        return None
    if not isinstance(rows[0], dict):
        return None
    columns = tuple(rows[0])
    return columns if all(isinstance(r, dict) and tuple(r) == columns for r in rows) else None


def _answer(prediction: Any) -> dict[str, Any]:
    return {"predictions": _get_jsonable_obj(prediction, pandas_orient="records")}


def serve_model(conn: Connection, model_uri: str, env: dict[str, str]) -> None:
    """A replica's process: load the model, say whether that worked, then answer batches until EOF."""
    os.environ.update(env)
    try:
        import mlflow.pyfunc

        scorer = ModelScorer(mlflow.pyfunc.load_model(model_uri))
    except Exception as err:
        conn.send((False, f"{type(err).__name__}: {err}"))
        return
    # One core per replica: OpenMP/BLAS threads would wait for the busy other core (latency spikes).
    threadpool_limits(1)
    conn.send((True, None))
    gc.freeze()  # the model and the libraries stay: full collections of them would stall requests
    while True:
        try:
            invocations = conn.recv()
        except (EOFError, OSError):  # the server closed the replica, or is gone
            return
        conn.send(scorer.answer(invocations))


class ModelReplica(Predictor):
    """The server's handle on a replica: queues invocations and sends them to the replica in batches."""

    def __init__(self, model_uri: str, *, load_timeout: float = LOAD_TIMEOUT_SECONDS) -> None:
        self.model_uri = model_uri
        conn, child = _CONTEXT.Pipe()
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        self._process = _CONTEXT.Process(
            target=serve_model, args=(child, model_uri, env), name=f"model {model_uri}", daemon=True
        )
        self._process.start()
        child.close()
        try:
            if not conn.poll(load_timeout):
                raise ModelLoadError(f"{model_uri} did not load within {load_timeout:g} s")
            loaded, message = conn.recv()
        except EOFError:
            self._process.join(5)
            raise ModelLoadError(
                f"the process loading {model_uri} exited (exit code {self._process.exitcode})"
            ) from None
        except BaseException:
            self._process.kill()
            raise
        if not loaded:
            self._process.join(5)
            raise ModelLoadError(message)
        self._conn = conn
        self._queue: list[tuple[Invocation, Future]] = []
        self._state = threading.Condition()  # guards the queue, the counts and ``_closed``
        self._in_flight = 0  # invocations submitted and not answered yet
        self._peak = 0  # the most in flight at once since the last batch was sent
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"dispatch {model_uri}", daemon=True)
        self._dispatcher.start()

    def __call__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        return self._submit((input_format, payload, params)).result()

    async def call_async(
        self, input_format: str, payload: Any, params: dict[str, Any] | None
    ) -> dict[str, Any]:
        return await asyncio.wrap_future(self._submit((input_format, payload, params)))

    def close(self) -> None:
        """Stop taking invocations; the replica exits once those already queued are answered."""
        with self._state:
            self._closed = True
            self._state.notify_all()

    def _submit(self, invocation: Invocation) -> Future:
        future: Future = Future()
        with self._state:
            if self._closed:
                raise _gone(self.model_uri)
            self._queue.append((invocation, future))
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            self._state.notify_all()
        return future

    def _dispatch(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._queue or self._closed)
                # Clients answered by the last batch come back a little apart: wait a moment for them.
                self._state.wait_for(lambda: len(self._queue) >= self._peak or self._closed, GATHER_SECONDS)
                batch, self._queue, self._peak = self._queue, [], self._in_flight
                if not batch:  # closed, and every invocation answered
                    break
            try:
                self._conn.send([invocation for invocation, _ in batch])
                outcomes = self._conn.recv()
            except (EOFError, OSError):
                log.error("the replica of %s exited (exit code %s)", self.model_uri, self._process.exitcode)
                with self._state:
                    self._closed = True
                    batch += self._queue
                    self._queue = []
                for _, future in batch:
                    future.set_exception(_gone(self.model_uri))
                break
            with self._state:
                self._in_flight -= len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(ApiError(*value))
        self._conn.close()
        self._process.join(10)


def _gone(model_uri: str) -> ApiError:
    return ApiError(
        503, "TEMPORARILY_UNAVAILABLE", f"The model server process of {model_uri} is not running."
    )
