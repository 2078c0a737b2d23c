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

A model logged with a training set (``FeatureLookupModel``) takes a shorter path for requests, in any input
format, whose values already have its signature's types: they are read straight into columns, the batch's
features looked up column by column, and the lookup model's ``predict_columns`` called once, skipping MLflow's
parsing into pandas and its schema checks, whose result for such requests is known. Profiled on the
benchmark's fraud model: a batch cost ~1.7 ms of CPU, of which the trees ~0.3 ms and MLflow's parsing, schema
checks and frames most of the rest; now ~0.7 ms. Every other request, and any that fails on this path, goes
through MLflow's parser as before, so answers and errors are the same.

Replicas are supervised, as Databricks supervises its serving containers: a replica whose process dies
(SIGKILL, the OOM killer, a crash in native code, an exception outside the per-request guard) or that runs
past the execution limit (it is killed then) is started again, after a pause that doubles with each failed
start (``BACKOFF_SECONDS`` up to ``MAX_BACKOFF_SECONDS``). The requests it held are answered 503
``TEMPORARILY_UNAVAILABLE`` (504 ``DEADLINE_EXCEEDED`` for the batch that ran too long), so are new ones until
it is back, and its served entity shows ``DEPLOYMENT_RECOVERING`` meanwhile.
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
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from mlflow.types.schema import ColSpec, DataType, Schema
from mlflow.utils.proto_json_utils import _get_jsonable_obj
from threadpoolctl import threadpool_limits

from helpers.local.lookup_model import FeatureLookupModel
from helpers.local.online_store import KeyTypeError
from helpers.local.server.errors import (
    ApiError,
    ModelLoadError,
    bad_request,
    model_error,
    timed_out,
    unavailable,
)
from helpers.local.server.parsing import typed_columns
from helpers.local.server.predictors import Predictor
from helpers.local.server.records import Health

log = logging.getLogger(__name__)

Invocation = tuple[str, Any, "dict[str, Any] | None"]  # input format, payload, params
Outcome = tuple[bool, Any]  # (True, the answer) or (False, (status, error_code, message))
# What a replica's process inherits: where the workspace's state and MLflow's registry are.
INHERITED_ENV = ("HELPERS_STATE_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
LOAD_TIMEOUT_SECONDS = 600.0
GATHER_SECONDS = 0.001  # the longest a free replica waits for requests to join a batch
BACKOFF_SECONDS = 0.5  # the pause before a dead replica is started again; doubled after each failed start
MAX_BACKOFF_SECONDS = 30.0
RECOVERING = "DEPLOYMENT_RECOVERING"
MODEL_ERROR = (
    "Encountered an unexpected error while evaluating the model. Verify that the input is compatible with "
    "the model for inference. Error '{error}'"
)
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


class ModelScorer:
    """An MLflow pyfunc model that answers a batch of invocations, each with its own answer or error."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._schema = model.metadata.get_input_schema()
        self._lookup = _lookup_model(model)
        # A params schema would give ``predict`` default params: only MLflow's path applies them.
        plain = self._lookup is not None and model.metadata.get_params_schema() is None
        self._types = _column_types(self._schema) if plain else None

    def answer(self, invocations: list[Invocation]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(invocations)
        typed = [(i, t) for i, inv in enumerate(invocations) if (t := self._typed(inv)) is not None]
        results = self._predict_columns([t for _, t in typed]) if typed else None
        if results is not None:
            for (i, _), result in zip(typed, results, strict=True):
                outcomes[i] = (True, _answer(result))
        columns = [_columns(invocation) for invocation in invocations]
        pending = [i for i, outcome in enumerate(outcomes) if outcome is None]
        while pending:
            first = pending[0]
            group = [first]
            if self._schema is not None and columns[first] is not None:
                params = invocations[first][2]
                group += [
                    i for i in pending[1:] if columns[i] == columns[first] and invocations[i][2] == params
                ]
            grouped = set(group)
            pending = [i for i in pending if i not in grouped]
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
        return _split(output, sizes)

    def _typed(self, invocation: Invocation) -> tuple[dict[str, list[Any]], int] | None:
        """The columns of an invocation the lookup model can take as they are (see ``typed_columns``)."""
        input_format, payload, params = invocation
        if self._types is None or params is not None:
            return None
        return typed_columns(input_format, payload, self._types)

    def _predict_columns(self, group: list[tuple[dict[str, list[Any]], int]]) -> list[Any] | None:
        """One answer per typed invocation from one columnar ``predict`` of the lookup model, without MLflow's
        parsing and schema enforcement (their result for such input is known); ``None`` if that fails, and
        each invocation is then answered alone by the full path, with its own answer or error."""
        assert self._lookup is not None and self._types is not None
        sizes = [n for _, n in group]
        columns = {name: [v for values, _ in group for v in values[name]] for name in self._types}
        try:
            output = self._lookup.predict_columns(columns, sum(sizes))
        except Exception:
            return None
        return _split(output, sizes)

    def _predict(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> Any:
        try:
            data = infer_and_parse_data({input_format: payload}, self._schema)
        except MlflowException as err:
            raise bad_request(err.message) from None
        except Exception as err:  # the parser trips over some shapes (unhashable column names, ...)
            raise bad_request(f"{input_format} cannot be read: {type(err).__name__}: {err}") from None
        try:
            return self._model.predict(data, params=params)
        except KeyTypeError as err:  # a lookup key of the wrong type (a model with feature lookups)
            raise bad_request(str(err)) from None
        except MlflowException as err:
            raise model_error(err.message) from None
        except Exception as err:  # the model's own failure is the caller's 400, as on Databricks
            raise model_error(MODEL_ERROR.format(error=err)) from None


def _split(output: Any, sizes: list[int]) -> list[Any] | None:
    """``output`` cut into one part per invocation of ``sizes`` rows; ``None`` if it is not one per row."""
    if not isinstance(output, (np.ndarray, pd.Series, pd.DataFrame, list)) or len(output) != sum(sizes):
        return None
    bounds = list(pairwise(np.cumsum([0, *sizes]).tolist()))
    if isinstance(output, (pd.Series, pd.DataFrame)):
        return [output.iloc[a:b] for a, b in bounds]
    return [output[a:b] for a, b in bounds]


def _lookup_model(model: Any) -> FeatureLookupModel | None:
    """The ``FeatureLookupModel`` inside a pyfunc (a model logged with a training set), if it is one."""
    try:
        python_model = model.unwrap_python_model()
    except MlflowException:
        return None
    return python_model if isinstance(python_model, FeatureLookupModel) else None


def _column_types(schema: Schema | None) -> dict[str, str] | None:
    """Column -> MLflow type name of a named column schema; ``None`` for none or any other schema."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    inputs = schema.inputs
    if not all(isinstance(spec, ColSpec) and isinstance(spec.type, DataType) for spec in inputs):
        return None
    return {spec.name: spec.type.name for spec in inputs}


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


def start_replica(model_uri: str, load_timeout: float) -> tuple[BaseProcess, Connection]:
    """A replica process of ``model_uri`` that has loaded the model, and the pipe to it."""
    conn, child = _CONTEXT.Pipe()
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    process = _CONTEXT.Process(
        target=serve_model, args=(child, model_uri, env), name=f"model {model_uri}", daemon=True
    )
    process.start()
    child.close()
    try:
        if not conn.poll(load_timeout):
            raise ModelLoadError(f"{model_uri} did not load within {load_timeout:g} s")
        loaded, message = conn.recv()
    except EOFError:
        process.join(5)
        raise ModelLoadError(
            f"the process loading {model_uri} exited (exit code {process.exitcode})"
        ) from None
    except BaseException:
        process.kill()
        raise
    if not loaded:
        process.join(5)
        raise ModelLoadError(message)
    return process, conn


class ModelReplica(Predictor):
    """The server's handle on a replica: queues invocations, sends them in batches, restarts it if it dies."""

    def __init__(
        self,
        model_uri: str,
        *,
        load_timeout: float = LOAD_TIMEOUT_SECONDS,
        execution_limit: float = float("inf"),
    ) -> None:
        self.model_uri = model_uri
        self._load_timeout = load_timeout
        self._limit = None if execution_limit == float("inf") else execution_limit
        self._process, self._conn = start_replica(model_uri, load_timeout)
        self._queue: list[tuple[Invocation, Future]] = []
        self._state = threading.Condition()  # guards the queue, the counts, ``_down`` and ``_closed``
        self._in_flight = 0  # invocations submitted and not answered yet
        self._peak = 0  # the most in flight at once since the last batch was sent
        self._closed = False
        self._down: str | None = None  # why the replica is not running, while it is started again
        self.restarts = 0
        self._dispatcher = threading.Thread(target=self._supervise, name=f"replica {model_uri}", daemon=True)
        self._dispatcher.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def __call__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        return self._submit((input_format, payload, params)).result()

    async def call_async(
        self, input_format: str, payload: Any, params: dict[str, Any] | None
    ) -> dict[str, Any]:
        return await asyncio.wrap_future(self._submit((input_format, payload, params)))

    def health(self) -> Health | None:
        down = self._down
        return None if down is None else (RECOVERING, down)

    def close(self) -> None:
        """Stop taking invocations; the replica exits once those already queued are answered."""
        with self._state:
            self._closed = True
            self._state.notify_all()

    def _submit(self, invocation: Invocation) -> Future:
        future: Future = Future()
        with self._state:
            if self._closed:
                raise unavailable(f"The model server process of {self.model_uri} is not running.")
            if self._down is not None:
                raise unavailable(f"The model server of {self.model_uri} is recovering: {self._down}")
            self._queue.append((invocation, future))
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            self._state.notify_all()
        return future

    def _supervise(self) -> None:
        """Serve batches; whenever the replica stops answering, start it again with backoff."""
        while (why := self._serve()) is not None:
            self._process.kill()
            self._process.join(10)
            self._conn.close()
            log.error("the replica of %s stopped: %s", self.model_uri, why)
            if not self._restart(why):
                return
        self._conn.close()
        self._process.join(10)

    def _restart(self, why: str) -> bool:
        """Start a new replica, pausing longer after each failed start; ``False`` if closed meanwhile."""
        delay = BACKOFF_SECONDS
        while True:
            with self._state:
                self._down = f"{why}; starting it again in {delay:g} s (restart {self.restarts + 1})"
                queued, self._queue = self._queue, []
                self._in_flight -= len(queued)
            _fail(queued, unavailable(f"The model server of {self.model_uri} is recovering: {why}"))
            with self._state:
                if self._state.wait_for(lambda: self._closed, delay):
                    return False
            try:
                self._process, self._conn = start_replica(self.model_uri, self._load_timeout)
            except ModelLoadError as err:
                why = f"starting it again failed: {err}"
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            with self._state:
                self._down = None
                self.restarts += 1
            log.info("the replica of %s runs again (restart %d)", self.model_uri, self.restarts)
            return True

    def _serve(self) -> str | None:
        """Send what is queued in batches until closed (``None``) or the replica fails (why it did)."""
        while True:
            with self._state:
                self._state.wait_for(lambda: self._queue or self._closed)
                # Clients answered by the last batch come back a little apart: wait a moment for them.
                self._state.wait_for(lambda: len(self._queue) >= self._peak or self._closed, GATHER_SECONDS)
                batch, self._queue, self._peak = self._queue, [], self._in_flight
                if not batch:  # closed, and every invocation answered
                    return None
            error: ApiError | None = None
            try:
                self._conn.send([invocation for invocation, _ in batch])
                if self._conn.poll(self._limit):
                    outcomes = self._conn.recv()
                else:
                    why = f"it ran past the {self._limit:g} s execution limit and was stopped"
                    error = timed_out(
                        f"The model {self.model_uri} did not answer within the execution limit of "
                        f"{self._limit:g} s."
                    )
            except (EOFError, OSError):
                self._process.join(1)
                why = f"its process exited (exit code {self._process.exitcode})"
                error = unavailable(f"The model server process of {self.model_uri} exited; it is restarting.")
            with self._state:
                self._in_flight -= len(batch)
            if error is not None:
                _fail(batch, error)
                return why
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(ApiError(*value))


def _fail(requests: list[tuple[Invocation, Future]], error: ApiError) -> None:
    for _, future in requests:
        future.set_exception(error)
