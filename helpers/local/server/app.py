"""The local workspace server: the Databricks REST routes the notebooks use, on one FastAPI app.

The route table is in ``create_app``. Handlers stay short: serving lives in ``serving.py``, jobs in
``jobs_api.py``, the token check in ``auth.py`` and the error shapes in ``errors.py``. Invocations, the one
hot route, are answered by ``InvocationsApp`` in front of FastAPI: the same checks without FastAPI's routing,
dependency solving and middleware stack (measured: ~0.6 -> ~0.35 ms of server CPU per single-key lookup).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from helpers.local.server import jobs_api
from helpers.local.server.auth import BearerToken
from helpers.local.server.errors import ApiError, bad_request
from helpers.local.server.limits import decode_json, read_body
from helpers.local.server.serving import EndpointRegistry

log = logging.getLogger(__name__)


# Handlers --------------------------------------------------------------------------------------------------
def _registry(request: Request) -> EndpointRegistry:
    return request.app.state.endpoints


async def _json_body(request: Request) -> dict[str, Any]:
    body = decode_json(await read_body(request) or b"{}")
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


async def host_metadata(request: Request) -> dict[str, Any]:
    """What the SDK reads when a client starts (``HostMetadata``): no OIDC here, only the workspace id."""
    return {"workspace_id": request.app.state.workspace_id}


async def create_endpoint(request: Request) -> dict[str, Any]:
    return _registry(request).create(await _json_body(request))


async def list_endpoints(request: Request) -> dict[str, Any]:
    return _registry(request).list()


async def get_endpoint(name: str, request: Request) -> dict[str, Any]:
    return _registry(request).get(name)


async def delete_endpoint(name: str, request: Request) -> dict[str, Any]:
    _registry(request).delete(name)
    return {}


async def update_config(name: str, request: Request) -> dict[str, Any]:
    return _registry(request).update_config(name, await _json_body(request))


async def put_ai_gateway(name: str, request: Request) -> dict[str, Any]:
    return _registry(request).put_ai_gateway(name, await _json_body(request))


# The route table (all need the bearer token); the jobs routes come from jobs_api.router.
ROUTES = (
    ("POST", "/api/2.0/serving-endpoints", create_endpoint),
    ("GET", "/api/2.0/serving-endpoints", list_endpoints),
    ("GET", "/api/2.0/serving-endpoints/{name}", get_endpoint),
    ("DELETE", "/api/2.0/serving-endpoints/{name}", delete_endpoint),
    ("PUT", "/api/2.0/serving-endpoints/{name}/config", update_config),
    ("PUT", "/api/2.0/serving-endpoints/{name}/ai-gateway", put_ai_gateway),
)
INVOCATIONS = re.compile(r"/serving-endpoints/(?P<name>[^/]+)/invocations")


class InvocationsApp:
    """``POST /serving-endpoints/{name}/invocations`` straight from ASGI; any other request goes to ``app``.

    The token check, the body limit and the error shapes are the ones every other route uses.
    """

    def __init__(self, app: FastAPI, auth: BearerToken) -> None:
        self.app = app
        self._auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INVOCATIONS.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            await self._auth(request)
            registry: EndpointRegistry = self.app.state.endpoints
            served, answer = await registry.invoke(match["name"], await read_body(request))
            response: Response = Response(
                answer, media_type="application/json", headers={"served-model-name": served}
            )
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
    return JSONResponse(bad_request("; ".join(problems)).body(), status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        message = f"No API found for '{request.method} {request.url.path}'"
        return JSONResponse({"error_code": "ENDPOINT_NOT_FOUND", "message": message}, status_code=404)
    return JSONResponse(
        {"error_code": "BAD_REQUEST", "message": str(exc.detail)}, status_code=exc.status_code
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    message = f"Internal error while serving {request.method} {request.url.path}: {type(exc).__name__}: {exc}"
    return JSONResponse({"error_code": "INTERNAL_ERROR", "message": message}, status_code=500)


# The app ---------------------------------------------------------------------------------------------------
def create_app(state_dir: Path, token: str) -> InvocationsApp:
    """The workspace server for ``state_dir``; every route but host metadata needs ``Bearer <token>``."""
    state_dir = Path(state_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.endpoints.start()
        jobs_api.on_startup(state_dir)
        try:
            yield
        finally:
            jobs_api.on_shutdown()
            app.state.endpoints.close()

    app = FastAPI(title="local Databricks workspace", lifespan=lifespan, openapi_url=None, docs_url=None)
    app.state.endpoints = EndpointRegistry(state_dir)
    app.state.workspace_id = str(int(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:13], 16))
    bearer = BearerToken(token)
    auth = [Depends(bearer)]

    app.add_api_route("/.well-known/databricks-config", host_metadata, methods=["GET"])  # no token needed
    for method, path, handler in ROUTES:
        app.add_api_route(path, handler, methods=[method], dependencies=auth)
    app.include_router(jobs_api.router, dependencies=auth)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return InvocationsApp(app, bearer)
