"""The names the notebooks create: one registry (``ProjectNames``) from the settings, read by teardown."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from helpers.config import PROJECT_ROOT, get_settings
from helpers.names import ProjectNames
from helpers.teardown import demo_resources

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").rglob("*.ipynb"))
TABLE_LITERAL = re.compile(r'cfg\.table\("(\w+)"\)')
NAME_PARAMETER = re.compile(r'^(\w+_name) = "([^"]+)"', re.MULTILINE)


def _code_cells(notebook: Path) -> list[tuple[list[str], str]]:
    cells = json.loads(notebook.read_text())["cells"]
    return [
        (cell.get("metadata", {}).get("tags", []), "".join(cell["source"]))
        for cell in cells
        if cell["cell_type"] == "code"
    ]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_name_a_notebook_spells_is_in_the_registry(notebook: Path) -> None:
    cfg = get_settings(backend="local")
    known = {getattr(ProjectNames.of(cfg), f.name) for f in fields(ProjectNames)}
    spelled = []
    for tags, source in _code_cells(notebook):
        spelled += [cfg.table(name) for name in TABLE_LITERAL.findall(source)]
        if "parameters" in tags:  # model_name, endpoint_name, online_store_name defaults
            spelled += [value for _, value in NAME_PARAMETER.findall(source)]
    missing = [name for name in spelled if name not in known and cfg.table(name) not in known]
    assert not missing, f"{notebook.name} creates or reads names the registry does not list: {missing}"


def test_the_names_follow_the_settings_and_teardown_reads_them() -> None:
    cfg = get_settings(
        backend="local", catalog="shop", schema="s1", model_endpoint="risk", model_name="risk_model"
    )
    names = ProjectNames.of(cfg)
    assert names.of_kind("endpoint")[1:3] == ("risk", "risk-request")
    assert names.payload_table == "shop.s1.risk_payload" and names.model == "shop.s1.risk_model"
    resources = demo_resources(cfg)
    assert resources.endpoints == names.of_kind("endpoint")
    assert resources.tables == names.of_kind("table") and resources.models == names.of_kind("model")
    assert resources.feature_specs == names.of_kind("feature spec")
    with pytest.raises(ValueError, match="kind must be one of"):
        names.of_kind("endpoints")
