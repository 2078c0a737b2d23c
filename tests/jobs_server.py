"""A real uvicorn server answering the Jobs API, for contract tests (``from jobs_server import serve_jobs``).

It mounts :mod:`helpers.local.server.jobs_api` in a minimal FastAPI app with the same error handler and
bearer-token check as the workspace server, on a free loopback port, in a background thread.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from databricks.sdk import WorkspaceClient
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from helpers.local.server import jobs_api
from helpers.local.server.errors import ApiError, unauthenticated

FIXTURE_NOTEBOOKS = Path(__file__).resolve().parent / "fixtures" / "notebooks"


@dataclass(frozen=True)
class JobsServer:
    url: str
    token: str
    state_dir: Path
    notebooks_root: Path

    def client(self) -> WorkspaceClient:
        return WorkspaceClient(host=self.url, token=self.token, auth_type="pat")


def jobs_app(state_dir: Path, token: str, notebooks_root: Path, max_workers: int = 2) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        jobs_api.on_startup(state_dir, notebooks_root=notebooks_root, max_workers=max_workers)
        yield
        jobs_api.on_shutdown()

    def bearer(request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {token}":
            raise unauthenticated("a valid bearer token is required")

    app = FastAPI(lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    app.include_router(jobs_api.router, dependencies=[Depends(bearer)])
    return app


@contextmanager
def serve_jobs(
    state_dir: Path, notebooks_root: Path = FIXTURE_NOTEBOOKS, max_workers: int = 2
) -> Iterator[JobsServer]:
    """Serve the Jobs API until the block ends; shutting down runs the jobs service's shutdown hook."""
    token = secrets.token_hex(16)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = jobs_app(state_dir, token, notebooks_root, max_workers)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the jobs test server did not start")
        time.sleep(0.02)
    try:
        yield JobsServer(f"http://127.0.0.1:{port}", token, state_dir, notebooks_root)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
