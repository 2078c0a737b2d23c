"""Shared fixtures: every test gets its own state directory, so nothing touches .workspace/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("HELPERS_STATE_DIR", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def nothing_written_to_the_working_directory() -> Iterator[None]:
    """Every test keeps its state in a temporary directory: MLflow must never fall back to ./mlflow.db."""
    stray = Path.cwd() / "mlflow.db"
    existed = stray.exists()
    yield
    assert existed or not stray.exists(), f"a test wrote {stray}; point MLflow at the test's state dir"
