"""Bearer-token authentication, as a personal access token is checked on Databricks."""

from __future__ import annotations

import hmac

from fastapi import Request

from helpers.local.server.errors import unauthenticated


class BearerToken:
    """A FastAPI dependency that lets a request through only with ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the server token must not be empty")
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, request: Request) -> None:  # async: FastAPI runs a sync one in a thread
        header = request.headers.get("authorization")
        if not header:
            raise unauthenticated("Missing Authorization header: send 'Authorization: Bearer <token>'.")
        if not hmac.compare_digest(header.encode(), self._expected):
            raise unauthenticated("Invalid access token.")
