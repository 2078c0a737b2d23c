"""The workspace server's bearer token: every route of the app needs it, except the host metadata."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from helpers.local.server.app import ROUTES, create_app
from helpers.local.server.process import ServerInfo, info_path, write_info

TOKEN = "dapi" + "0123456789abcdef" * 2
OPEN_ROUTES = {"/.well-known/databricks-config"}
WRONG = {
    "no header": {},
    "empty": {"Authorization": ""},
    "wrong token": {"Authorization": "Bearer dapi-wrong"},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token plus a character": {"Authorization": f"Bearer {TOKEN}0"},
    "no scheme": {"Authorization": TOKEN},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "non-ASCII": {"Authorization": "Bearer dapi\u00e9".encode("latin-1")},
}


def _api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    """Every route, included routers' too; a route of another kind fails the test rather than be skipped."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI's included router
            yield from _api_routes(route.original_router.routes)
        else:
            raise AssertionError(f"a route this test does not know how to check: {route!r}")


def test_every_route_but_host_metadata_refuses_a_missing_or_wrong_token(tmp_path: Path) -> None:
    app = create_app(tmp_path, TOKEN)
    client = TestClient(app)  # no lifespan: the token is checked before any handler or service runs
    routes = [(r.method, r.path) for r in ROUTES]
    served = {(m, r.path) for r in _api_routes(app.api.routes) for m in r.methods}
    assert served == {(r.method, r.path) for r in ROUTES if not r.hot}  # the table is every route
    protected = [(m, p) for m, p in routes if p not in OPEN_ROUTES]
    assert len(protected) >= 7 + 2 * 11, routes  # the serving routes and the jobs routes of API 2.1 and 2.2
    for method, path in protected:
        url = re.sub(r"\{[^}]+\}", "anything", path)
        for case, headers in WRONG.items():
            answer = client.request(method, url, headers=headers, content=b"{}")
            assert answer.status_code == 401, (method, path, case, answer.text)
            assert answer.json()["error_code"] == "UNAUTHENTICATED", (method, path, case)
    for path in OPEN_ROUTES:
        assert client.get(path).status_code == 200


def test_the_token_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Even over a leftover world-readable temporary file, and whatever the umask."""
    stale = info_path(tmp_path).with_suffix(f".{os.getpid()}.tmp")
    stale.write_text("{}")
    stale.chmod(0o644)
    previous = os.umask(0)
    try:
        write_info(tmp_path, ServerInfo("http://127.0.0.1:1", TOKEN, os.getpid()))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(info_path(tmp_path).stat().st_mode) == 0o600


def test_the_right_token_passes(tmp_path: Path) -> None:
    answer = TestClient(create_app(tmp_path, TOKEN)).get(
        "/api/2.0/serving-endpoints", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200 and answer.json() == {"endpoints": []}, answer.text
