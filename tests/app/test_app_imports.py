"""The app deploys on its own (Databricks Apps uploads ``app/`` only) and speaks only the SDK."""

from __future__ import annotations

import ast

from helpers.config import PROJECT_ROOT

APP_DIR = PROJECT_ROOT / "app"


def _imported_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(APP_DIR.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(PROJECT_ROOT))] = names
    return found


def test_the_app_has_pages() -> None:
    assert {"app/app.py", "app/views/shelf_optimization.py", "app/views/fraud_check.py"} <= set(
        _imported_modules()
    )


def test_the_app_imports_nothing_from_the_local_twin_or_the_project_package() -> None:
    offenders = {
        path: sorted(n for n in names if n == "helpers" or n.startswith("helpers."))
        for path, names in _imported_modules().items()
    }
    assert not {p: n for p, n in offenders.items() if n}, "app/ must not import helpers (nor helpers.local)"


def test_the_app_reaches_the_platform_only_through_the_sdk() -> None:
    allowed_roots = {"databricks", "streamlit", "pandas", "matplotlib", "dashboard", "__future__"}
    stdlib = {"io", "json", "os", "time", "dataclasses", "functools", "itertools", "collections", "typing"}
    for path, names in _imported_modules().items():
        unexpected = {n for n in names if n.split(".")[0] not in allowed_roots | stdlib}
        assert not unexpected, f"{path} imports {sorted(unexpected)}"


def test_app_requirements_name_what_the_app_imports() -> None:
    requirements = (APP_DIR / "requirements.txt").read_text()
    for package in ("databricks-sdk", "streamlit", "pandas", "matplotlib"):
        assert package in requirements
