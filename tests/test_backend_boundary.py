"""Only ``helpers.platform`` (with ``helpers.config``, which detects the backend) branches on the backend."""

from __future__ import annotations

import json
import re

import pytest

from helpers.config import PROJECT_ROOT

ALLOWED = {PROJECT_ROOT / "helpers" / "platform.py", PROJECT_ROOT / "helpers" / "config.py"}
BRANCH = re.compile(r"\.backend\b|DATABRICKS_RUNTIME_VERSION|backend\s*==")


def _sources() -> list[tuple[str, str]]:
    found = []
    for path in sorted((PROJECT_ROOT / "helpers").rglob("*.py")):
        if path not in ALLOWED:
            found.append((str(path.relative_to(PROJECT_ROOT)), path.read_text()))
    for path in sorted((PROJECT_ROOT / "notebooks").rglob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        found.append((str(path.relative_to(PROJECT_ROOT)), "".join("".join(c["source"]) for c in cells)))
    for path in sorted((PROJECT_ROOT / "app").rglob("*.py")):
        found.append((str(path.relative_to(PROJECT_ROOT)), path.read_text()))
    return found


@pytest.mark.parametrize(("name", "source"), _sources(), ids=[n for n, _ in _sources()])
def test_no_backend_branch_outside_platform(name: str, source: str) -> None:
    hits = [line.strip() for line in source.splitlines() if BRANCH.search(line)]
    assert not hits, f"{name} branches on the backend; move it into helpers.platform: {hits}"


def test_the_check_sees_a_branch() -> None:
    assert BRANCH.search("if cfg.backend == 'databricks':")
    assert BRANCH.search('os.environ.get("DATABRICKS_RUNTIME_VERSION")')
