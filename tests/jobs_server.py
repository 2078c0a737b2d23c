"""The workspace server's app on a free loopback port, in a background thread, for the Jobs API tests.

``from jobs_server import serve_jobs`` (``tests/`` is on ``sys.path`` through the root ``conftest.py``).
Job notebook paths resolve inside ``notebooks_root`` (the fixture notebooks unless told otherwise).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from databricks.sdk import WorkspaceClient

from helpers.local.jobs import LocalJobs
from helpers.local.server.app import WorkspaceApp, create_app
from helpers.local.server.jobs_api import NOTEBOOKS_ROOT_ENV
from helpers.local.server.layout import mlflow_uri as mlflow_uri_of

FIXTURE_NOTEBOOKS = Path(__file__).resolve().parent / "fixtures" / "notebooks"


@dataclass(frozen=True)
class JobsServer:
    url: str
    token: str
    state_dir: Path
    notebooks_root: Path
    app: WorkspaceApp

    @property
    def jobs(self) -> LocalJobs:
        """The running app's jobs service."""
        return self.app.state.jobs

    def client(self) -> WorkspaceClient:
        return WorkspaceClient(host=self.url, token=self.token, auth_type="pat")


@contextmanager
def serve_jobs(state_dir: Path, notebooks_root: Path = FIXTURE_NOTEBOOKS) -> Iterator[JobsServer]:
    """Serve until the block ends; stopping runs the app's shutdown (running notebooks are stopped).

    While it runs, the process environment names ``state_dir`` (and its MLflow database) as the server's
    own ``__main__`` does, so nothing is written outside ``state_dir``.
    """
    token = secrets.token_hex(16)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    mlflow_uri = mlflow_uri_of(state_dir)
    # What `python -m helpers.local.server` sets for itself (and so for the job notebooks it starts).
    environment = {
        NOTEBOOKS_ROOT_ENV: str(notebooks_root),
        "HELPERS_STATE_DIR": str(state_dir),
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_REGISTRY_URI": mlflow_uri,
    }
    previous = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    app = create_app(state_dir, token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the workspace test server did not start")
            time.sleep(0.02)
        yield JobsServer(f"http://127.0.0.1:{port}", token, state_dir, notebooks_root, app)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
