"""The fraud scorer logged by the benchmark (pickled by value, so a server needs no ``benchmarks`` import)."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


class FraudScorer(mlflow.pyfunc.PythonModel):
    """Probability of fraud for each row."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:
        return self.model.predict_proba(model_input)[:, 1]
