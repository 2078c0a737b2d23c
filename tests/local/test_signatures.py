"""The local client's methods take the same arguments, with the same defaults, as Databricks' client.

Besides a fixed list, every ``fe.<method>(`` call in the notebooks and in ``helpers`` is checked, so a
notebook cannot start using a method the twin lacks or spells differently.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest
from databricks.feature_engineering import FeatureEngineeringClient

from helpers.config import PROJECT_ROOT
from helpers.local.feature_client import LocalFeatureEngineeringClient

LISTED = {
    "create_table", "write_table", "read_table", "get_table", "drop_table", "create_training_set",
    "log_model", "score_batch", "create_online_store", "get_online_store", "delete_online_store",
    "publish_table", "drop_online_table", "create_feature_spec", "delete_feature_spec",
}  # fmt: skip
_CALL = re.compile(r"\bfe\.([a-z_]+)\(")


def _called_in_project() -> set[str]:
    sources = [
        "".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
        for path in (PROJECT_ROOT / "notebooks").rglob("*.ipynb")
    ]
    sources += [path.read_text() for path in (PROJECT_ROOT / "helpers").glob("*.py")]
    return {name for source in sources for name in _CALL.findall(source)}


CALLED = _called_in_project()


def test_the_notebooks_call_the_feature_client() -> None:
    assert {"create_training_set", "log_model", "score_batch", "publish_table"} <= CALLED


def _shape(function) -> list[tuple]:
    shape = []
    for p in inspect.signature(function).parameters.values():
        default = p.default
        plain = (str, int, float, bool, dict, type(None))
        if default is not inspect.Parameter.empty and not isinstance(default, plain):
            default = "<object>"  # sentinels: compare that a default exists, not its identity
        shape.append((p.name, p.kind, default))
    return shape


@pytest.mark.parametrize("method", sorted(LISTED | CALLED))
def test_same_arguments_and_defaults_as_databricks(method: str) -> None:
    assert hasattr(LocalFeatureEngineeringClient, method), f"the local client lacks {method}"
    real = _shape(getattr(FeatureEngineeringClient, method))
    local = _shape(getattr(LocalFeatureEngineeringClient, method))
    assert local == real
