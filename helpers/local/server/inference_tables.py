"""Inference tables: every invocation of an endpoint, logged to ``<catalog>.<schema>.<prefix>_payload``.

A request only appends a tuple of raw values (a ``PayloadEvent``) to an in-memory buffer: ids, decoding,
dates and size checks happen when a background thread turns the batch into columns and writes it to the
Delta table, every ``flush_seconds`` or as soon as ``max_rows`` rows wait; ``close`` writes what is left.
A clean stop loses nothing; a crash (SIGKILL, power loss) loses at most the rows of the last
``flush_seconds``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from helpers.local.server.errors import bad_request
from helpers.local.tables import DeltaTables
from helpers.names import validate_identifier

log = logging.getLogger(__name__)

# The column names, order and types of an AI Gateway inference table on Databricks, as `SHOW CREATE TABLE`
# shows a real `<prefix>_payload` table (column comments as in Databricks' "AI Gateway-enabled inference
# table schema": docs.databricks.com/ai-gateway/inference-tables). Spark's BIGINT/INT/DOUBLE/TIMESTAMP/DATE
# map to int64/int32/float64/timestamp[us, UTC]/date32.
PAYLOAD_SCHEMA = pa.schema(
    [
        ("databricks_request_id", pa.string()),
        ("request_date", pa.date32()),
        ("client_request_id", pa.string()),
        ("request_time", pa.timestamp("us", tz="UTC")),
        ("status_code", pa.int32()),
        ("sampling_fraction", pa.float64()),
        ("execution_duration_ms", pa.int64()),
        ("request", pa.string()),
        ("response", pa.string()),
        ("logging_error_codes", pa.list_(pa.string())),
        ("served_entity_id", pa.string()),
        ("requester", pa.string()),
    ]
)
MAX_LOGGED_PAYLOAD_BYTES = 1024 * 1024  # Databricks does not log payloads over 1 MiB (an error code instead)
FLUSH_SECONDS = 5.0  # the longest a logged request waits in memory: what a crash can lose
MAX_BUFFERED_ROWS = 200_000  # if the table cannot be written for long, the oldest rows go first


@dataclass(frozen=True)
class InferenceTableConfig:
    """``ai_gateway.inference_table_config`` or the older ``config.auto_capture_config`` (same fields)."""

    catalog_name: str
    schema_name: str
    table_name_prefix: str
    enabled: bool

    @property
    def payload_table(self) -> str:
        return f"{self.catalog_name}.{self.schema_name}.{self.table_name_prefix}_payload"

    def to_json(self) -> dict[str, Any]:
        return {
            "catalog_name": self.catalog_name,
            "schema_name": self.schema_name,
            "table_name_prefix": self.table_name_prefix,
            "enabled": self.enabled,
        }

    @classmethod
    def parse(cls, raw: Any, where: str, endpoint_name: str) -> InferenceTableConfig:
        """Validate a request's config; 400 naming the field. The prefix defaults to the endpoint name."""
        if not isinstance(raw, dict):
            raise bad_request(f"{where} must be an object with catalog_name, schema_name, table_name_prefix")
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise bad_request(f"{where}.enabled must be true or false")
        values = {}
        for key in ("catalog_name", "schema_name", "table_name_prefix"):
            value = raw.get(key)
            if key == "table_name_prefix" and value is None:
                value = endpoint_name.replace("-", "_")
            if enabled or value is not None:
                try:
                    validate_identifier(value, f"{where}.{key}")
                except (TypeError, ValueError) as err:
                    raise bad_request(str(err)) from None
            values[key] = value
        return cls(**values, enabled=enabled)


class PayloadEvent(NamedTuple):
    """One invocation as the request path records it: raw values only, turned into a row when written."""

    received_ns: int  # time.time_ns() when the request arrived
    status_code: int
    execution_ms: int
    request: bytes
    response: bytes | None
    client_request_id: str | None
    served_entity_id: str | None
    requester: str
    request_id: str | None = None  # None: a random UUID, given when the batch is written


def payload_table(events: list[PayloadEvent]) -> pa.Table:
    """The payload rows of ``events``; a payload over 1 MiB is left out with an error code (Databricks).

    Column by column in Arrow's C++ (a row at a time in Python cost ~3-5 us a row, holding the GIL).
    """
    received, status, execution, requests, responses, client_ids, entities, requesters, ids = zip(
        *events, strict=True
    )
    n, missing = len(events), ids.count(None)
    request_ids = _uuid4s(n) if missing == n else _fill(ids, _uuid4s(missing).to_pylist())
    times = pa.array(np.asarray(received, dtype=np.int64) // 1000, type=pa.timestamp("us", tz="UTC"))
    request_bytes, response_bytes = pa.array(requests, pa.binary()), pa.array(responses, pa.binary())
    request_big = pc.greater(pc.binary_length(request_bytes), MAX_LOGGED_PAYLOAD_BYTES)
    response_big = pc.fill_null(pc.greater(pc.binary_length(response_bytes), MAX_LOGGED_PAYLOAD_BYTES), False)
    columns = {
        "databricks_request_id": request_ids,
        "request_date": times.cast(pa.date32()),
        "client_request_id": pa.array(client_ids, pa.string()),
        "request_time": times,
        "status_code": pa.array(status, pa.int32()),
        "sampling_fraction": pa.nulls(n, pa.float64()).fill_null(1.0),
        "execution_duration_ms": pa.array(execution, pa.int64()),
        "request": _text(pc.if_else(request_big, pa.scalar(None, pa.binary()), request_bytes)),
        "response": _text(pc.if_else(response_big, pa.scalar(None, pa.binary()), response_bytes)),
        "logging_error_codes": _error_codes(request_big, response_big),
        "served_entity_id": pa.array(entities, pa.string()),
        "requester": pa.array(requesters, pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=PAYLOAD_SCHEMA)


def _uuid4s(n: int) -> pa.StringArray:
    """``n`` random version-4 UUID strings from one draw of random bytes, formatted in numpy."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = np.frombuffer(raw.tobytes().hex().encode(), dtype=np.uint8).reshape(n, 32)
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dashes, (start, end) in enumerate(((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))):  # 8-4-4-4-12
        text[:, start + dashes : end + dashes] = digits[:, start:end]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _fill(ids: tuple[str | None, ...], new: list[str]) -> list[str]:
    fresh = iter(new)
    return [rid if rid is not None else next(fresh) for rid in ids]


def _error_codes(request_big: pa.Array, response_big: pa.Array) -> pa.Array:
    """Per row, the codes of the payloads left out for size; empty lists, as a whole, when none was."""
    if not (pc.any(request_big).as_py() or pc.any(response_big).as_py()):
        offsets = pa.array(np.zeros(len(request_big) + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array([], pa.string()))
    return pa.array(
        [
            ["MAX_REQUEST_SIZE_EXCEEDED"] * big_request + ["MAX_RESPONSE_SIZE_EXCEEDED"] * big_response
            for big_request, big_response in zip(
                request_big.to_pylist(), response_big.to_pylist(), strict=True
            )
        ],
        pa.list_(pa.string()),
    )


def _text(payloads: pa.Array) -> pa.Array:
    """UTF-8 text of the payloads; bytes that are not UTF-8 become U+FFFD, as ``errors="replace"``."""
    try:
        return payloads.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array(
            [None if p is None else p.decode("utf-8", errors="replace") for p in payloads.to_pylist()],
            pa.string(),
        )


class PayloadLogger:
    """Buffers payload rows per table and appends them to Delta in batches, off the request path."""

    # A Delta append costs ~55 ms of CPU per commit plus ~1.3 us a row (measured): 20,000 rows a commit
    # costs ~4 us a row, 5,000 rows ~12. The crash window stays ``flush_seconds``.
    def __init__(
        self, state_dir: Path, *, flush_seconds: float = FLUSH_SECONDS, max_rows: int = 20_000
    ) -> None:
        self._tables = DeltaTables(state_dir)
        self._flush_seconds = flush_seconds
        self._max_rows = max_rows
        self._buffer: dict[str, list[PayloadEvent]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time: the thread, or close()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="payload-logger", daemon=True)
        self._thread.start()

    def log(self, table: str, event: PayloadEvent) -> None:
        with self._lock:
            rows = self._buffer.get(table)
            if rows is None:
                rows = self._buffer[table] = []
            rows.append(event)
            if len(rows) > MAX_BUFFERED_ROWS:
                del rows[: len(rows) - MAX_BUFFERED_ROWS]
                log.warning("payload buffer of %s is full: dropped the oldest rows", table)
            full = len(rows) >= self._max_rows
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Write every buffered row now; rows of a table that cannot be written stay buffered."""
        with self._write_lock:
            with self._lock:
                pending, self._buffer = self._buffer, {}
            for table, rows in pending.items():
                try:
                    self._append(table, rows)
                except Exception:  # a broken table never breaks serving; its rows wait for the next try
                    log.exception("writing %d payload rows to %s failed", len(rows), table)
                    with self._lock:
                        newer = self._buffer.pop(table, None)
                        if newer is not None:
                            rows.extend(newer)
                        self._buffer[table] = rows

    def close(self) -> None:
        """Stop the thread and write what is left (a clean stop loses nothing)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            self.flush()

    def _append(self, table: str, rows: list[PayloadEvent]) -> None:
        # A plain Delta table, as on Databricks: no primary key, not a feature table (spark.table reads it).
        data = payload_table(rows)
        with self._tables.lock(table):
            write_deltalake(str(self._tables.path(table)), data, mode="append")
