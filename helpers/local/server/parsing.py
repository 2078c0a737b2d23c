"""Request parsing: every serving request body checked field by field, a 400 naming the field otherwise.

Pure functions of the request (and of whether a name is a feature spec): nothing here loads or stores.
"""

from __future__ import annotations

import getpass
import math
import re
from collections.abc import Callable
from typing import Any

from helpers.local.server.errors import ApiError, bad_request
from helpers.local.server.inference_tables import InferenceTableConfig
from helpers.local.server.limits import decode_json
from helpers.local.server.records import EndpointConfig, ServedEntity
from helpers.names import parse_uc_name

ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
SERVED_ENTITY_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
WORKLOAD_SIZES = ("Small", "Medium", "Large")
INPUT_FORMATS = ("dataframe_records", "dataframe_split", "instances", "inputs")
IsFeatureSpec = Callable[[str], bool]


# Invocations ----------------------------------------------------------------------------------------------
def parse_invocation(body: bytes) -> tuple[str, Any, dict[str, Any] | None, str | None]:
    """(input format, payload, params, client_request_id) of an invocation body; 400 naming what is wrong.

    The 16 MB size limit is applied while the body is read (``limits.read_body``).
    """
    data = decode_json(body)
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object with one of {list(INPUT_FORMATS)}")
    present = [f for f in INPUT_FORMATS if f in data]
    if len(present) != 1:
        raise bad_request(
            f"the request must carry exactly one of {list(INPUT_FORMATS)}; got {present or sorted(data)}"
        )
    params = data.get("params")
    if params is not None and not isinstance(params, dict):
        raise bad_request("params must be an object (name -> value)")
    client_request_id = data.get("client_request_id")
    if client_request_id is not None and not _is_text(client_request_id):
        # A lone surrogate ("\ud800" in JSON) cannot be stored: it would block the inference table's writes.
        raise bad_request("client_request_id must be a string of valid Unicode text")
    return present[0], data[present[0]], params, client_request_id


def request_records(input_format: str, payload: Any) -> list[dict[str, Any]]:
    """Request rows (column -> value) from any of the four input formats, without pandas."""
    if input_format in ("dataframe_records", "instances") or (
        input_format == "inputs" and isinstance(payload, list)
    ):
        if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
            raise bad_request(f"{input_format} must be a list of objects (column -> value)")
        records = payload
    elif input_format == "dataframe_split":
        columns = payload.get("columns") if isinstance(payload, dict) else None
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise bad_request("dataframe_split must be an object with 'columns' (a list of names) and 'data'")
        data = payload.get("data")
        if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
            raise bad_request("dataframe_split.data must be a list of rows (lists)")
        for i, row in enumerate(data):
            if len(row) != len(columns):
                raise bad_request(
                    f"dataframe_split.data[{i}] has {len(row)} values for {len(columns)} columns"
                )
        records = [dict(zip(columns, row, strict=True)) for row in data]
    elif isinstance(payload, dict):  # inputs: columns of values, or one row of scalars
        if all(isinstance(v, list) for v in payload.values()):
            lengths = {len(v) for v in payload.values()}
            if len(lengths) > 1:
                raise bad_request(
                    f"inputs columns must all have the same length, got lengths {sorted(lengths)}"
                )
            records = [
                dict(zip(payload, values, strict=True)) for values in zip(*payload.values(), strict=True)
            ]
        else:
            records = [payload]
    else:
        raise bad_request("inputs must be an object (column -> values) or a list of objects")
    if not records:
        raise bad_request(f"{input_format} holds no rows")
    return records


def typed_columns(
    input_format: str, payload: Any, types: dict[str, str]
) -> tuple[dict[str, list[Any]], int] | None:
    """(columns, row count) of a request whose rows carry exactly the columns ``types`` names (column ->
    MLflow type: ``long``, ``double``, ``string`` or ``boolean``), each value already of its column's type;
    ``None`` for any other request, which MLflow's own parser then reads (and rejects with its errors).

    For such a request every input format gives what MLflow's parsing and schema enforcement give: a JSON
    integer for ``long``, a finite number as a float for ``double``, a string, a boolean.
    """
    if input_format == "dataframe_split" and not (isinstance(payload, dict) and set(payload) == _SPLIT):
        return None  # an "index" or unknown keys: MLflow's reading decides
    try:
        records = request_records(input_format, payload)
    except ApiError:
        return None
    names = set(types)
    if len(names) != len(types) or not all(len(r) == len(names) and r.keys() == names for r in records):
        return None
    columns: dict[str, list[Any]] = {}
    for name, kind in types.items():
        convert = _TYPED.get(kind)
        if convert is None:
            return None
        values = [convert(r[name]) for r in records]
        if _NOT_TYPED in values:
            return None
        columns[name] = values
    return columns, len(records)


_SPLIT = {"columns", "data"}
_NOT_TYPED = object()
_INT64 = range(-(2**63), 2**63)


def _long(value: Any) -> Any:
    return value if type(value) is int and value in _INT64 else _NOT_TYPED


def _double(value: Any) -> Any:
    if type(value) is float:
        return value if math.isfinite(value) else _NOT_TYPED
    return float(value) if type(value) is int and value in _INT64 else _NOT_TYPED


def _string(value: Any) -> Any:
    return value if type(value) is str and (value.isascii() or _is_text(value)) else _NOT_TYPED


def _boolean(value: Any) -> Any:
    return value if type(value) is bool else _NOT_TYPED


_TYPED: dict[str, Callable[[Any], Any]] = {
    "long": _long,
    "double": _double,
    "string": _string,
    "boolean": _boolean,
}


# Endpoint bodies ------------------------------------------------------------------------------------------
def parse_endpoint_fields(
    body: dict[str, Any],
) -> tuple[str, list[dict[str, str]], str | None, dict[str, Any]]:
    """(name, tags, description, config body) of a create request."""
    name = body.get("name")
    if not isinstance(name, str) or not ENDPOINT_NAME.match(name):
        raise bad_request(
            f"name {name!r} is not a valid endpoint name: letters, digits, hyphens and underscores, "
            "starting with a letter or digit, at most 63 characters"
        )
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(_is_tag(t) for t in tags):
        raise bad_request("tags must be a list of {key, value} objects with string keys and values")
    description = body.get("description")
    if not isinstance(description, str | None):
        raise bad_request("description must be a string")
    config_body = body.get("config")
    if not isinstance(config_body, dict):
        raise bad_request("config is required: {'served_entities': [{'entity_name': ..., ...}]}")
    return name, tags, description, config_body


def parse_config(
    body: dict[str, Any],
    where: str,
    version: int,
    now: int,
    endpoint_name: str,
    is_feature_spec: IsFeatureSpec,
) -> EndpointConfig:
    """An endpoint configuration (``EndpointCoreConfigInput``); ``where`` prefixes the field names."""
    prefix = f"{where}." if where else ""
    raw_entities = body.get("served_entities")
    if raw_entities is None and body.get("served_models") is not None:  # the older spelling
        raw_entities = [
            {**m, "entity_name": m.get("model_name"), "entity_version": m.get("model_version")}
            if isinstance(m, dict)
            else m
            for m in body["served_models"]
        ]
    if not isinstance(raw_entities, list) or not raw_entities:
        raise bad_request(f"{prefix}served_entities must list at least one entity to serve")
    entities = [
        _parse_entity(e, f"{prefix}served_entities[{i}]", now, is_feature_spec)
        for i, e in enumerate(raw_entities)
    ]
    names = [e.name for e in entities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise bad_request(
            f"{prefix}served_entities: served entity names must be unique, repeated: {duplicates}"
        )
    routes = _parse_routes(body.get("traffic_config"), names, f"{prefix}traffic_config")
    capture = body.get("auto_capture_config")
    if capture is not None:
        where = f"{prefix}auto_capture_config"
        capture = InferenceTableConfig.parse(capture, where, endpoint_name).to_json()
    return EndpointConfig(entities, routes, version, now, capture)


def parse_ai_gateway(raw: Any, where: str, endpoint_name: str) -> dict[str, Any] | None:
    """``ai_gateway`` (only its ``inference_table_config`` is supported locally)."""
    if raw is None:
        return None
    prefix = f"{where}." if where else ""
    if not isinstance(raw, dict):
        raise bad_request(f"{where or 'the request body'} must be an object")
    unsupported = sorted(k for k, v in raw.items() if v and k not in ("inference_table_config", "name"))
    if unsupported:
        raise bad_request(
            f"{prefix}{unsupported[0]}: the local workspace supports only AI Gateway's inference_table_config"
        )
    table = raw.get("inference_table_config")
    if table is None:
        return None
    where = f"{prefix}inference_table_config"
    return {"inference_table_config": InferenceTableConfig.parse(table, where, endpoint_name).to_json()}


def _parse_entity(raw: Any, where: str, now: int, is_feature_spec: IsFeatureSpec) -> ServedEntity:
    if not isinstance(raw, dict):
        raise bad_request(f"{where} must be an object")
    if raw.get("external_model") or raw.get("foundation_model"):
        raise bad_request(f"{where}: the local workspace serves registered models and feature specs only")
    entity_name = raw.get("entity_name")
    try:
        parse_uc_name(entity_name, "entity")
    except ValueError as err:
        raise bad_request(f"{where}.entity_name: {err}") from None
    version = raw.get("entity_version")
    if version is not None:
        version = str(version)
        if not version.isdigit():
            raise bad_request(f"{where}.entity_version {version!r} must be a model version number")
    elif not is_feature_spec(entity_name):
        raise bad_request(
            f"{where}.entity_version is required: {entity_name} is not a feature spec, and a model is "
            "served by version"
        )
    workload_size = raw.get("workload_size", "Small")
    if workload_size not in WORKLOAD_SIZES:
        raise bad_request(f"{where}.workload_size {workload_size!r} must be one of {list(WORKLOAD_SIZES)}")
    scale_to_zero = raw.get("scale_to_zero_enabled", False)
    if not isinstance(scale_to_zero, bool):
        raise bad_request(f"{where}.scale_to_zero_enabled must be true or false")
    name = raw.get("name") or _default_entity_name(entity_name, version)
    if not isinstance(name, str) or not SERVED_ENTITY_NAME.match(name):
        raise bad_request(f"{where}.name {name!r} may hold only letters, digits, hyphens and underscores")
    return ServedEntity(
        name=name,
        entity_name=entity_name,
        entity_version=version,
        workload_size=workload_size,
        scale_to_zero_enabled=scale_to_zero,
        workload_type=raw.get("workload_type"),
        creator=getpass.getuser(),
        creation_timestamp=now,
    )


def _default_entity_name(entity_name: str, version: str | None) -> str:
    short = entity_name.rsplit(".", 1)[-1]
    return short if version is None else f"{short}-{version}"


def _parse_routes(traffic: Any, names: list[str], where: str) -> list[tuple[str, int]]:
    if traffic is None:
        if len(names) == 1:
            return [(names[0], 100)]
        raise bad_request(f"{where} is required when an endpoint serves more than one entity")
    routes = traffic.get("routes") if isinstance(traffic, dict) else None
    if not isinstance(routes, list) or not routes:
        raise bad_request(f"{where}.routes must list at least one route")
    parsed: list[tuple[str, int]] = []
    for i, route in enumerate(routes):
        target = (
            route.get("served_entity_name") or route.get("served_model_name")
            if isinstance(route, dict)
            else None
        )
        if target not in names:
            raise bad_request(
                f"{where}.routes[{i}] must name one of the served entities {names}, got {target!r}"
            )
        pct = route.get("traffic_percentage")
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise bad_request(f"{where}.routes[{i}].traffic_percentage must be an integer from 0 to 100")
        parsed.append((target, pct))
    targets = [t for t, _ in parsed]
    if len(set(targets)) != len(targets):
        raise bad_request(f"{where}.routes name a served entity more than once")
    total = sum(p for _, p in parsed)
    if total != 100:
        raise bad_request(f"{where}.routes: the traffic_percentage values must add up to 100, got {total}")
    return parsed


def _is_tag(tag: Any) -> bool:
    return isinstance(tag, dict) and _is_text(tag.get("key")) and isinstance(tag.get("value", ""), str | None)


def _is_text(value: Any) -> bool:
    """A string that UTF-8 can encode (JSON can carry lone surrogates, which it cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
