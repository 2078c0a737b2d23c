"""Served MLflow models: requests parsed as MLflow's scoring server does, concurrent ones scored together.

Scoring is micro-batched. A request that finds the model busy queues; whichever queued thread gets the model
next answers every request queued by then, first waiting up to ``GATHER_SECONDS`` for as many requests as
were lately in flight at once (answered clients come back a little apart). ``dataframe_records`` requests
with the same columns and ``params``, for a model with an input schema (which fixes the column types), are
parsed and scored in one ``predict`` call, and the answer is split back by rows; any other request is
answered alone. A lone request is answered at once. A batch that fails, or whose answer is not one
prediction per row, is answered again request by request, so each request gets its own answer or error.
Profiling showed why: parsing into pandas and one ``predict`` of a small sklearn pipeline cost about as
much for 8 rows as for 1.
"""

from __future__ import annotations

import threading
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from mlflow.utils.proto_json_utils import _get_jsonable_obj

from helpers.local.server.errors import ApiError, bad_request
from helpers.local.server.serving import MODEL_ERROR, Predictor, model_error

GATHER_SECONDS = 0.002


class _Call:
    """One request, and once answered, its prediction or its error."""

    __slots__ = ("input_format", "payload", "params", "done", "result", "error")

    def __init__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> None:
        self.input_format, self.payload, self.params = input_format, payload, params
        self.done = False
        self.result: Any = None
        self.error: ApiError | None = None

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The columns of a ``dataframe_records`` request whose rows all have the same ones, else None."""
        rows = self.payload
        if self.input_format != "dataframe_records" or not isinstance(rows, list) or not rows:
            return None
        if not isinstance(rows[0], dict):
            return None
        columns = tuple(rows[0])
        return columns if all(isinstance(r, dict) and tuple(r) == columns for r in rows) else None


class ModelPredictor(Predictor):
    """An MLflow pyfunc model, parsed and answered exactly as MLflow's scoring server does."""

    blocking = True

    def __init__(self, model: Any) -> None:
        self._model = model
        self._schema = model.metadata.get_input_schema()
        self._queue: list[_Call] = []
        self._state = threading.Condition()  # guards the queue, the counts and ``_busy``
        self._busy = False  # a thread is answering the queue (one at a time)
        self._in_flight = 0
        self._peak = 0  # the most requests in flight at once since the last batch was taken

    def __call__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        call = _Call(input_format, payload, params)
        with self._state:
            self._queue.append(call)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            self._state.notify_all()
        try:
            self._wait_or_answer(call)
        finally:
            with self._state:
                self._in_flight -= 1
        if call.error is not None:
            raise call.error
        return {"predictions": _get_jsonable_obj(call.result, pandas_orient="records")}

    def _wait_or_answer(self, call: _Call) -> None:
        with self._state:
            self._state.wait_for(lambda: call.done or not self._busy)
            if call.done:
                return
            self._busy = True
            self._state.wait_for(lambda: len(self._queue) >= self._peak, GATHER_SECONDS)
            queued, self._queue, self._peak = self._queue, [], self._in_flight
        try:
            self._answer(queued)
        finally:
            with self._state:
                self._busy = False
                self._state.notify_all()

    def _answer(self, calls: list[_Call]) -> None:
        batchable = self._schema is not None
        while calls:
            first, columns = calls[0], calls[0].columns
            group = [first]
            if batchable and columns is not None:
                group += [c for c in calls[1:] if c.params == first.params and c.columns == columns]
            calls = [c for c in calls if c not in group]
            try:
                results = self._predict_batch(group) if len(group) > 1 else None
                for i, call in enumerate(group):
                    if results is not None:
                        call.result = results[i]
                        continue
                    try:
                        call.result = self._predict(call.input_format, call.payload, call.params)
                    except ApiError as err:
                        call.error = err
            finally:
                for call in group:
                    call.done = True

    def _predict_batch(self, group: list[_Call]) -> list[Any] | None:
        """One answer per call from one parse and one ``predict``; ``None`` if they cannot be had as one."""
        sizes = [len(c.payload) for c in group]
        try:
            rows = [row for c in group for row in c.payload]
            output = self._predict("dataframe_records", rows, group[0].params)
        except ApiError:  # each call is answered alone, and gets its own error
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
