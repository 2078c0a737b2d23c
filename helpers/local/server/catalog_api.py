"""Unity Catalog lookups: ``GET /api/2.1/unity-catalog/tables/{full_name}`` and ``schemas/{full_name}``.

The data-quality API names a table by its ``table_id`` and an output schema by its ``schema_id`` (UUIDs), so
a client first reads them with ``w.tables.get(name).table_id`` / ``w.schemas.get(name).schema_id``. Locally
a table's id is its Delta table id (new when the table is dropped and created again, as in Unity Catalog);
a schema's id is derived from its name. A schema exists once a table was written in it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from helpers.local.server.errors import bad_request, not_found
from helpers.local.tables import DeltaTables
from helpers.names import parse_uc_name

_SCHEMA_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "helpers.local/unity-catalog/schemas")


def _tables(request: Request) -> DeltaTables:
    return request.app.state.tables


def table_name(tables: DeltaTables, full_name: str) -> str:
    """``full_name`` if it is a Delta table here; 400 for a malformed name, 404 for a missing table."""
    try:
        parse_uc_name(full_name, "table")
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if not tables.is_delta(full_name):
        raise not_found(f"Table '{full_name}' does not exist.")
    return full_name


def table_id(tables: DeltaTables, full_name: str) -> str:
    return str(tables.any_delta(full_name).metadata().id)


def table_by_id(tables: DeltaTables, object_id: str) -> str:
    """The name of the table whose id is ``object_id``; 404 when none has it."""
    for log in sorted(tables.root.glob("*/*/*/_delta_log")):
        catalog, schema, name = log.parent.relative_to(tables.root).parts
        full_name = f"{catalog}.{schema}.{name}"
        if table_id(tables, full_name) == object_id:
            return full_name
    raise not_found(
        f"Table with id '{object_id}' does not exist. "
        "Read a table's id with w.tables.get(full_name).table_id."
    )


def schema_id(full_name: str) -> str:
    return str(uuid.uuid5(_SCHEMA_IDS, full_name))


def schema_name(tables: DeltaTables, full_name: str) -> str:
    """``full_name`` (``catalog.schema``) if the schema exists here; 400 malformed, 404 missing."""
    try:
        uc = parse_uc_name(f"{full_name}._", "schema")
    except ValueError as exc:
        raise bad_request(str(exc).replace("._", "")) from None
    if not (tables.root / uc.catalog / uc.schema).is_dir():
        raise not_found(f"Schema '{full_name}' does not exist.")
    return full_name


def schema_by_id(tables: DeltaTables, object_id: str) -> str:
    """The name of the schema whose id is ``object_id``; 404 when none has it."""
    for path in sorted(tables.root.glob("*/*")):
        if path.is_dir() and schema_id(f"{path.parent.name}.{path.name}") == object_id:
            return f"{path.parent.name}.{path.name}"
    raise not_found(
        f"Schema with id '{object_id}' does not exist. "
        "Read a schema's id with w.schemas.get(full_name).schema_id."
    )


def _table_json(tables: DeltaTables, full_name: str) -> dict[str, Any]:
    catalog, schema, name = full_name.split(".")
    delta = tables.any_delta(full_name)
    arrow = pa.schema(delta.schema().to_arrow())
    return {
        "name": name,
        "catalog_name": catalog,
        "schema_name": schema,
        "full_name": full_name,
        "table_id": str(delta.metadata().id),
        "table_type": "MANAGED",
        "data_source_format": "DELTA",
        "storage_location": tables.path(full_name).as_uri(),
        "columns": [
            {"name": f.name, "type_text": str(f.type), "position": i, "nullable": f.nullable}
            for i, f in enumerate(arrow)
        ],
    }


async def get_table(full_name: str, request: Request) -> dict[str, Any]:
    tables = _tables(request)
    return await run_in_threadpool(lambda: _table_json(tables, table_name(tables, full_name)))


async def get_schema(full_name: str, request: Request) -> dict[str, Any]:
    name = schema_name(_tables(request), full_name)
    catalog, schema = name.split(".")
    return {"name": schema, "catalog_name": catalog, "full_name": name, "schema_id": schema_id(name)}
