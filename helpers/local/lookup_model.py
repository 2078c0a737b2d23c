"""The MLflow pyfunc that ``log_model(..., training_set=...)`` writes: a model that looks up its own features.

The artifact holds the raw model and the feature spec. At predict time the request carries keys and
request-time values; the wrapper fetches the rest from the online store and calls the raw model. As on
Databricks there is no offline fallback: a lookup from a table that was never published fails, naming the
table. ``score_batch`` joins the offline tables itself and calls :meth:`FeatureLookupModel.predict_features`.
The local server, ``mlflow models serve`` and ``score_batch`` all use this one class.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import mlflow
import pandas as pd

from helpers.config import get_settings
from helpers.local.feature_spec import FeatureSpec, resolve_columns
from helpers.local.functions import FunctionRegistry
from helpers.local.online_store import OnlineStore


class FeatureLookupModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper: request rows (keys + request-time values) -> features -> raw model prediction."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.spec = FeatureSpec.load(Path(context.artifacts["feature_spec"]))
        self.raw_model = mlflow.pyfunc.load_model(context.artifacts["raw_model"])
        state_dir = get_settings().state_dir
        self._reader = OnlineStore(state_dir)
        self._functions = FunctionRegistry(state_dir).callable

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> Any:
        columns = {c: model_input[c].tolist() for c in model_input.columns}
        return self.predict_columns(columns, len(model_input), params)

    def predict_columns(self, columns: dict[str, list[Any]], n_rows: int, params: dict | None = None) -> Any:
        """Predict from request columns (name -> one value per row), as ``predict`` does from a frame.

        Column lists, not row dicts, and one online read per lookup table for all rows: the local server
        calls this directly for requests whose values already have their schema types (profiled: the
        per-row dicts, and MLflow's parsing into pandas, cost several times the model's own ``predict``).
        """
        resolved = resolve_columns(self.spec, columns, n_rows, self._reader, self._functions)
        self._require_inputs(resolved)
        features = {c: resolved[c] for c in self.spec.model_input_columns}
        return self.raw_model.predict(pd.DataFrame(features), params=params)

    def predict_features(self, features: pd.DataFrame, params: dict | None = None) -> Any:
        """Predict from a frame that already holds every model input column."""
        self._require_inputs(features.columns)
        return self.raw_model.predict(features[self.spec.model_input_columns], params=params)

    def _require_inputs(self, columns: Any) -> None:
        missing = [c for c in self.spec.model_input_columns if c not in columns]
        if missing:
            raise ValueError(f"model input is missing column(s) {missing}")


def _save_raw_model(model: Any, flavor: ModuleType, path: Path, flavor_kwargs: dict[str, Any]) -> None:
    if flavor is mlflow.pyfunc:
        # The wrapped model carries no signature (the wrapper has one); MLflow 3.8 would warn that the
        # predict type hints give none.
        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_log.level
        pyfunc_log.setLevel(logging.ERROR)
        try:
            mlflow.pyfunc.save_model(path=str(path), python_model=model, **flavor_kwargs)
        finally:
            pyfunc_log.setLevel(level)
    else:
        flavor.save_model(model, path=str(path), **flavor_kwargs)


def log_lookup_model(
    *,
    model: Any,
    name: str,
    flavor: ModuleType,
    training_set: Any,
    registered_model_name: str | None,
    infer_input_example: bool,
    extra_pip_requirements: list[str] | None,
    **flavor_kwargs: Any,
) -> mlflow.models.model.ModelInfo:
    """Log ``model`` wrapped in :class:`FeatureLookupModel`, with the training set's feature spec."""
    spec: FeatureSpec = training_set.feature_spec
    with tempfile.TemporaryDirectory() as tmp:
        raw_path, spec_path = Path(tmp) / "raw_model", Path(tmp) / "feature_spec.json"
        _save_raw_model(model, flavor, raw_path, flavor_kwargs)
        spec.save(spec_path)
        signature = input_example = None
        if infer_input_example:
            input_example = training_set.input_example(5)
            features = training_set.load_df().head(5)[spec.model_input_columns]
            output = mlflow.pyfunc.load_model(str(raw_path)).predict(features)
            signature = mlflow.models.infer_signature(input_example, output)
        # The wrapper needs what the raw model needs; naming it skips MLflow's slow requirement inference.
        requirements = (raw_path / "requirements.txt").read_text().split()
        with _quiet_example_check():
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=FeatureLookupModel(),
                artifacts={"raw_model": str(raw_path), "feature_spec": str(spec_path)},
                registered_model_name=registered_model_name,
                signature=signature,
                input_example=input_example,
                pip_requirements=[*requirements, *(extra_pip_requirements or [])],
            )


class _DropExampleCheckWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to validate serving input example")


@contextmanager
def _quiet_example_check() -> Iterator[None]:
    """Silence MLflow's log-time check that predicts the input example: the example holds only keys, whose
    features are looked up online, and the tables need not be published until the model is served."""
    logger, quiet = logging.getLogger("mlflow.models.model"), _DropExampleCheckWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def load_packaged_model(model_uri: str) -> FeatureLookupModel:
    """The :class:`FeatureLookupModel` behind ``model_uri``; an error if logged without a training set."""
    python_model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    if not isinstance(python_model, FeatureLookupModel):
        raise ValueError(
            f"{model_uri} was not logged with a training set (fe.log_model(..., training_set=...))"
        )
    return python_model
