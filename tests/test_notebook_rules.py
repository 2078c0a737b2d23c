"""Rules the notebooks' own code follows so that it runs the same on Databricks (see docs/rules.md)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted(Path(__file__).parents[1].glob("notebooks/**/*.ipynb"))


def _code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    lines = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(
        line for cell in lines for line in cell.splitlines() if not line.lstrip().startswith(("%", "!"))
    )


def _positional_joins(tree: ast.AST) -> list[str]:
    """``frame.join(other)`` without ``on=``: pandas lines rows up by index, i.e. by position here."""
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"
        ):
            continue
        receiver = node.func.value
        if isinstance(receiver, ast.Constant) or ast.unparse(receiver) == "os.path":
            continue  # str.join, os.path.join
        if not any(k.arg == "on" for k in node.keywords):
            found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_lines_rows_of_two_frames_up_by_position(path: Path) -> None:
    # A Spark join keeps no row order: a training set's rows need not come back in the order of its df.
    assert _positional_joins(ast.parse(_code(path))) == [], f"{path.name}: join on keys, not by position"
