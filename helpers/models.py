"""The course's one model class, logged the MLflow 3 way: as **models from code**.

``mlflow.pyfunc.log_model(python_model=models.MODEL_CODE, artifacts={"pipeline": ...})`` (or
``fe.log_model(model=models.MODEL_CODE, flavor=mlflow.pyfunc, artifacts=...)``) copies *this file* into the
model: loading the model runs it, and its last line hands MLflow the model object. No Python object is pickled
with the model, so a model logged here loads on a workspace's serving container, which does not have the
``helpers`` package: this file imports only MLflow, pandas and scikit-learn.

The trained scikit-learn pipeline travels as the ``pipeline`` artifact (see :func:`save_pipeline`).
"""

from __future__ import annotations

from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import set_model
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

MODEL_CODE = str(Path(__file__).resolve())  # ``python_model=`` of ``log_model``: models from code


class PositiveProbability(mlflow.pyfunc.PythonModel):
    """Answers the probability of the positive class (label 1) of the ``pipeline`` artifact, one per row."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.pipeline = joblib.load(context.artifacts["pipeline"])

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        return self.pipeline.predict_proba(model_input)[:, 1]


def classifier(
    features: pd.DataFrame, *, max_iter: int, learning_rate: float = 0.1, seed: int = 42
) -> Pipeline:
    """Gradient boosting behind a one-hot encoder of the non-numeric columns of ``features`` (not fitted)."""
    categorical = [name for name in features if not pd.api.types.is_numeric_dtype(features[name])]
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)],
        remainder="passthrough",
    )
    boost = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, random_state=seed)
    return Pipeline([("encode", encode), ("model", boost)])


def save_pipeline(pipeline: Pipeline, folder: str | Path) -> dict[str, str]:
    """Save a fitted pipeline under ``folder``; returns the ``artifacts=`` argument of ``log_model``."""
    path = Path(folder) / "pipeline.joblib"
    joblib.dump(pipeline, path)
    return {"pipeline": str(path)}


set_model(PositiveProbability())
