"""Where the local workspace keeps its state: every path under the state directory, named once.

Deleting the directory resets the workspace. The server, the job runner and ``helpers.platform`` all find
their files through these functions, so the layout is written down here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path


def workspace_db(state_dir: Path) -> Path:
    """The server's own SQLite database: serving endpoints, served entities and jobs (WAL)."""
    return Path(state_dir) / "workspace.db"


def mlflow_db(state_dir: Path) -> Path:
    """MLflow's tracking store and model registry."""
    return Path(state_dir) / "mlflow.db"


def mlflow_uri(state_dir: Path) -> str:
    """The tracking and registry URI of the workspace's MLflow."""
    return f"sqlite:///{mlflow_db(state_dir)}"


def mlflow_artifacts(state_dir: Path) -> Path:
    """The artifact root of the workspace's experiments."""
    return Path(state_dir) / "mlruns"


def server_info(state_dir: Path) -> Path:
    """``server.json``: the running server's url, token and pid (mode 0600)."""
    return Path(state_dir) / "server.json"


def server_log(state_dir: Path) -> Path:
    return Path(state_dir) / "server.log"


def server_lock(state_dir: Path) -> Path:
    """Held while a server is being started, so two starters do not start two servers."""
    return Path(state_dir) / "server.lock"
