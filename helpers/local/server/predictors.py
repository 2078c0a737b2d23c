"""Predictors and routing: what answers an invocation, which one answers it, and the answer's JSON.

A ``Predictor`` answers one invocation; a model version's is a replica process (``model_processes``), a
feature spec's looks features up in the online store here. A ``Router`` holds the predictors of one
endpoint configuration and picks one per request by traffic percentage.
"""

from __future__ import annotations

import json
import math
import random
from datetime import date, datetime
from typing import Any

from helpers.local.feature_spec import FeatureSpec, resolve_records
from helpers.local.functions import FunctionRegistry
from helpers.local.online_store import KeyTypeError, OnlineStore, TableNotPublishedError
from helpers.local.server.errors import bad_request, invalid_state, model_error
from helpers.local.server.parsing import request_records
from helpers.local.server.records import EndpointConfig, Health


class Predictor:
    """Answers one invocation."""

    def __call__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError

    async def call_async(
        self, input_format: str, payload: Any, params: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The answer, from the event loop (a predictor that would block it says so here)."""
        return self(input_format, payload, params)

    def health(self) -> Health | None:
        """The served entity's state while it differs from its deployment's (a replica recovering)."""
        return None

    def close(self) -> None:
        """Release what the predictor holds; called once no configuration routes to it."""


class FeatureSpecPredictor(Predictor):
    """A feature spec: online lookups and functions, answered as Databricks Feature Serving does."""

    def __init__(self, spec: FeatureSpec, store: OnlineStore, functions: FunctionRegistry) -> None:
        self._spec = spec
        self._store = store
        self._functions = functions

    def __call__(self, input_format: str, payload: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        records = request_records(input_format, payload)
        try:
            rows = resolve_records(self._spec, records, self._store, self._functions.callable)
        except TableNotPublishedError as err:
            raise invalid_state(str(err)) from None
        except KeyTypeError as err:  # a key that cannot be a value of its key column
            raise bad_request(str(err)) from None
        except KeyError as err:  # a request without a lookup key or function input column
            raise bad_request(str(err.args[0])) from None
        except LookupError as err:  # a function of the spec was deleted
            raise invalid_state(str(err)) from None
        except Exception as err:
            raise model_error(f"Encountered an error while computing features: {err}") from None
        return {"outputs": rows}


class Router:
    """The loaded entities of one configuration; picks one per request by traffic percentage."""

    def __init__(self, config: EndpointConfig, predictors: dict[str, Predictor]) -> None:
        self.by_key = {e.key: predictors[e.name] for e in config.served_entities}
        self.by_name = {e.name: predictors[e.name] for e in config.served_entities}
        self.entities = {e.name: e for e in config.served_entities}
        routes = [(name, pct) for name, pct in config.routes if pct > 0]
        self._names = [name for name, _ in routes]
        self._predictors = [predictors[name] for name in self._names]
        self._weights = [pct for _, pct in routes]

    def pick(self) -> tuple[str, Predictor]:
        if len(self._names) == 1:
            return self._names[0], self._predictors[0]
        i = random.choices(range(len(self._names)), weights=self._weights)[0]
        return self._names[i], self._predictors[i]

    def health(self, name: str) -> Health | None:
        predictor = self.by_name.get(name)
        return predictor.health() if predictor is not None else None

    def serving(self) -> bool:
        """Whether any entity that takes traffic is up."""
        return any(p.health() is None for p in self._predictors)


def encode_answer(answer: dict[str, Any]) -> bytes:
    """Standard JSON: a NaN or infinite value (a feature or prediction) is ``null``, never a bare token.

    The common answer is encoded once; only one that holds such a value pays for the second pass.
    """
    try:
        return json.dumps(answer, default=_json_default, allow_nan=False).encode()
    except ValueError:
        plain = json.loads(json.dumps(answer, default=_json_default))
        return json.dumps(_finite(plain), allow_nan=False).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
