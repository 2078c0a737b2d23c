"""Fresh state directories start with an empty MLflow database migrated once per test session.

MLflow creates its SQLite schema by running ~60 migrations, 3 to 6 s on this machine, in every new state
directory (the test's own process, the server's, each notebook kernel's, whichever opens it first). A copy of
one made by the same MLflow at the start of the session is the very file MLflow would create; nothing else is
shared between state directories.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers.local.server.layout import mlflow_db, mlflow_uri

_directory: Path | None = None  # where the template goes (the session's temporary directory)


def use_directory(directory: Path) -> None:
    global _directory
    _directory = directory


def _template() -> Path:
    """The empty, migrated database (tracking store and model registry), made on first use."""
    from mlflow import MlflowClient

    assert _directory is not None, "tests/conftest.py names the template's directory for the session"
    state = _directory / "state"
    if not mlflow_db(state).exists():
        state.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=mlflow_uri(state), registry_uri=mlflow_uri(state))
        client.search_experiments()
        client.search_registered_models()
    return mlflow_db(state)


def seed(state_dir: Path) -> Path:
    """Give ``state_dir`` (created if missing) the migrated empty database, unless it has one; returns it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if not mlflow_db(state_dir).exists():
        shutil.copyfile(_template(), mlflow_db(state_dir))
    return state_dir
