"""Reading request bodies within limits: 16 MB a body (Databricks' documented model-serving limit, applied to
every route) and JSON that the parser can take (no nesting deep enough to exhaust the stack)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from helpers.local.server.errors import ApiError, bad_request, too_large

MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _too_large(size: int) -> ApiError:
    return too_large(
        f"the request payload ({size} bytes) exceeds the 16 MB limit ({MAX_REQUEST_BYTES} bytes)"
    )


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as its declared or received size passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise _too_large(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``); 400 for anything else."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def decode_json(raw: bytes) -> Any:
    """The parsed body; 400 if it is not JSON (or too deeply nested to parse)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"the request body is not valid JSON: {err}") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply to parse") from None
