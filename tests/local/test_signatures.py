"""The local client's methods take the same arguments, with the same defaults, as Databricks' client."""

from __future__ import annotations

import inspect

import pytest
from databricks.feature_engineering import FeatureEngineeringClient

from helpers.local.feature_client import LocalFeatureEngineeringClient

METHODS = [
    "create_table",
    "write_table",
    "read_table",
    "get_table",
    "drop_table",
    "create_training_set",
    "log_model",
    "score_batch",
    "create_online_store",
    "get_online_store",
    "publish_table",
    "create_feature_spec",
    "delete_feature_spec",
]


def _shape(function) -> list[tuple]:
    shape = []
    for p in inspect.signature(function).parameters.values():
        default = p.default
        if default is not inspect.Parameter.empty and not isinstance(
            default, (str, int, float, bool, dict, type(None))
        ):
            default = "<object>"  # sentinels: compare that a default exists, not its identity
        shape.append((p.name, p.kind, default))
    return shape


@pytest.mark.parametrize("method", METHODS)
def test_same_arguments_and_defaults_as_databricks(method: str) -> None:
    real = _shape(getattr(FeatureEngineeringClient, method))
    local = _shape(getattr(LocalFeatureEngineeringClient, method))
    assert local == real
