"""The local workspace server: the Databricks REST routes the notebooks use, on one FastAPI app.

``ROUTES`` is the route table, the one place routes are listed; it reads like the REST contract. Handlers
stay short and delegate: serving endpoints to the ``EndpointRegistry`` (``app.state.endpoints``), jobs to
``jobs_api`` (``app.state.jobs``), data-profiling monitors to ``monitors_api`` (``app.state.monitors``),
Unity Catalog table and schema lookups to ``catalog_api``, the token check to ``auth.py``; every error comes
from ``errors.py``.

The one hot route, invocations, is marked ``hot``: ``WorkspaceApp`` answers it straight from ASGI in front
of FastAPI, with the same token check, body limit and error shapes but without FastAPI's routing,
dependency solving and middleware stack (measured: ~0.6 -> ~0.35 ms of server CPU per single-key lookup).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from helpers.local.server import catalog_api, jobs_api, monitors_api, quality_monitors_api
from helpers.local.server.auth import BearerToken
from helpers.local.server.errors import (
    ApiError,
    bad_request,
    http_error,
    internal_error,
    no_such_route,
)
from helpers.local.server.limits import read_body, read_object
from helpers.local.server.registry import EndpointRegistry
from helpers.local.tables import DeltaTables

log = logging.getLogger(__name__)


# Handlers --------------------------------------------------------------------------------------------------
def _endpoints(request: Request) -> EndpointRegistry:
    return request.app.state.endpoints


async def host_metadata(request: Request) -> dict[str, Any]:
    """What the SDK reads when a client starts (``HostMetadata``): no OIDC here, only the workspace id."""
    return {"workspace_id": request.app.state.workspace_id}


async def create_endpoint(request: Request) -> dict[str, Any]:
    return await _endpoints(request).create(await read_object(request))


async def list_endpoints(request: Request) -> dict[str, Any]:
    return _endpoints(request).list()


async def get_endpoint(name: str, request: Request) -> dict[str, Any]:
    return _endpoints(request).get(name)


async def delete_endpoint(name: str, request: Request) -> dict[str, Any]:
    return _endpoints(request).delete(name)


async def update_config(name: str, request: Request) -> dict[str, Any]:
    return await _endpoints(request).update_config(name, await read_object(request))


async def put_ai_gateway(name: str, request: Request) -> dict[str, Any]:
    return _endpoints(request).put_ai_gateway(name, await read_object(request))


async def invoke(request: Request, name: str) -> Response:
    served, answer = await _endpoints(request).invoke(name, await read_body(request))
    return Response(answer, media_type="application/json", headers={"served-model-name": served})


# The route table -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    token: bool = True  # needs ``Authorization: Bearer <token>``
    hot: bool = False  # answered by ``WorkspaceApp`` in front of FastAPI


JOB_ROUTES = (
    ("POST", "create", jobs_api.create_job),
    ("GET", "get", jobs_api.get_job),
    ("GET", "list", jobs_api.list_jobs),
    ("POST", "reset", jobs_api.reset_job),
    ("POST", "update", jobs_api.update_job),
    ("POST", "delete", jobs_api.delete_job),
    ("POST", "run-now", jobs_api.run_now),
    ("GET", "runs/get", jobs_api.get_run),
    ("GET", "runs/list", jobs_api.list_runs),
    ("GET", "runs/get-output", jobs_api.get_run_output),
    ("POST", "runs/cancel", jobs_api.cancel_run),
)
MONITORS = "/api/data-quality/v1/monitors"
MONITOR = MONITORS + "/{object_type}/{object_id}"
LEGACY_MONITOR = "/api/2.1/unity-catalog/tables/{table_name}/monitor"  # deprecated; same monitors
ROUTES = (
    Route("GET", "/.well-known/databricks-config", host_metadata, token=False),
    Route("POST", "/api/2.0/serving-endpoints", create_endpoint),
    Route("GET", "/api/2.0/serving-endpoints", list_endpoints),
    Route("GET", "/api/2.0/serving-endpoints/{name}", get_endpoint),
    Route("DELETE", "/api/2.0/serving-endpoints/{name}", delete_endpoint),
    Route("PUT", "/api/2.0/serving-endpoints/{name}/config", update_config),
    Route("PUT", "/api/2.0/serving-endpoints/{name}/ai-gateway", put_ai_gateway),
    Route("POST", "/serving-endpoints/{name}/invocations", invoke, hot=True),
    *(
        Route(method, f"/api/{version}/jobs/{path}", handler)
        for version in ("2.2", "2.1")  # the SDK speaks 2.2; older clients 2.1
        for method, path, handler in JOB_ROUTES
    ),
    Route("GET", "/api/2.1/unity-catalog/tables/{full_name}", catalog_api.get_table),
    Route("GET", "/api/2.1/unity-catalog/schemas/{full_name}", catalog_api.get_schema),
    Route("POST", MONITORS, monitors_api.create_monitor),
    Route("GET", MONITORS, monitors_api.list_monitors),
    Route("GET", MONITOR, monitors_api.get_monitor),
    Route("PATCH", MONITOR, monitors_api.update_monitor),
    Route("DELETE", MONITOR, monitors_api.delete_monitor),
    Route("POST", MONITOR + "/refreshes", monitors_api.create_refresh),
    Route("GET", MONITOR + "/refreshes", monitors_api.list_refreshes),
    Route("GET", MONITOR + "/refreshes/{refresh_id}", monitors_api.get_refresh),
    Route("POST", MONITOR + "/refreshes/{refresh_id}/cancel", monitors_api.cancel_refresh),
    Route("POST", LEGACY_MONITOR, quality_monitors_api.create),
    Route("GET", LEGACY_MONITOR, quality_monitors_api.get),
    Route("PUT", LEGACY_MONITOR, quality_monitors_api.update),
    Route("DELETE", LEGACY_MONITOR, quality_monitors_api.delete),
    Route("POST", LEGACY_MONITOR + "/refreshes", quality_monitors_api.run_refresh),
    Route("GET", LEGACY_MONITOR + "/refreshes", quality_monitors_api.list_refreshes),
    Route("GET", LEGACY_MONITOR + "/refreshes/{refresh_id}", quality_monitors_api.get_refresh),
    Route("POST", LEGACY_MONITOR + "/refreshes/{refresh_id}/cancel", quality_monitors_api.cancel_refresh),
)


class WorkspaceApp:
    """The ASGI app: the ``hot`` route answered here, straight from ASGI; everything else by FastAPI."""

    def __init__(self, api: FastAPI, auth: BearerToken, hot: Route) -> None:
        self.api = api
        self.state = api.state
        self._auth = auth
        self._method = hot.method
        self._path = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", hot.path))
        self._handler = hot.handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self._path.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != self._method:
            await self.api(scope, receive, send)
            return
        scope["app"] = self.api
        request = Request(scope, receive)
        try:
            await self._auth(request)
            response: Response = await self._handler(request, **match.groupdict())
        except ApiError as err:
            response = await _api_error(request, err)
        except Exception as err:
            response = await _unexpected_error(request, err)
        await response(scope, receive, send)


# Errors in Databricks' shape -------------------------------------------------------------------------------
async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
        problems.append(f"{where or 'request'}: {error.get('msg', 'invalid value')}")
    return await _api_error(request, bad_request("; ".join(problems)))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        return await _api_error(request, no_such_route(request.method, request.url.path))
    return await _api_error(request, http_error(exc.status_code, str(exc.detail)))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    where = f"{request.method} {request.url.path}"
    return await _api_error(
        request, internal_error(f"Internal error while serving {where}: {type(exc).__name__}: {exc}")
    )


# The app ---------------------------------------------------------------------------------------------------
def create_app(state_dir: Path, token: str) -> WorkspaceApp:
    """The workspace server for ``state_dir``; every route but host metadata needs ``Bearer <token>``."""
    state_dir = Path(state_dir)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        api.state.endpoints.start()
        api.state.jobs = jobs_api.start_jobs(state_dir)
        api.state.monitors = monitors_api.DataProfilingMonitors(state_dir)
        try:
            yield
        finally:
            jobs, api.state.jobs = api.state.jobs, None
            monitors, api.state.monitors = api.state.monitors, None
            monitors.close()
            jobs.shutdown()
            api.state.endpoints.close()

    api = FastAPI(title="local Databricks workspace", lifespan=lifespan, openapi_url=None, docs_url=None)
    api.state.endpoints = EndpointRegistry(state_dir)
    api.state.jobs = None
    api.state.monitors = None
    api.state.tables = DeltaTables(state_dir)
    api.state.workspace_id = str(int(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:13], 16))
    bearer = BearerToken(token)
    [hot] = [route for route in ROUTES if route.hot]
    for route in ROUTES:
        if not route.hot:
            dependencies = [Depends(bearer)] if route.token else None
            api.add_api_route(route.path, route.handler, methods=[route.method], dependencies=dependencies)
    api.add_exception_handler(ApiError, _api_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected_error)
    return WorkspaceApp(api, bearer, hot)
