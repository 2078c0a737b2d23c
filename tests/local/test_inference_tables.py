"""The payload logger behind inference tables: batches off the request path, nothing lost on close."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from helpers.local.server.errors import ApiError
from helpers.local.server.inference_tables import (
    MAX_LOGGED_PAYLOAD_BYTES,
    PAYLOAD_SCHEMA,
    InferenceTableConfig,
    PayloadEvent,
    PayloadLogger,
    payload_table,
)
from helpers.local.tables import DeltaTables, TableMeta

TABLE = "main.default.ep_payload"


RECEIVED_NS = int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1e9)


def _row(i: int, request: bytes = b'{"inputs": [1]}') -> PayloadEvent:
    return PayloadEvent(
        received_ns=RECEIVED_NS,
        status_code=200,
        execution_ms=3,
        request=request,
        response=b'{"predictions": [0]}',
        client_request_id=None,
        served_entity_id="e1",
        requester="me",
        request_id=f"id-{i}",
    )


def test_close_writes_every_buffered_row_with_databricks_columns(state_dir: Path) -> None:
    logger = PayloadLogger(state_dir, flush_seconds=3600, max_rows=10_000)  # only close() writes
    for i in range(25):
        logger.log(TABLE, _row(i))
    assert not DeltaTables(state_dir).is_delta(TABLE)

    logger.close()

    table = DeltaTables(state_dir).read_any(TABLE)
    assert table.num_rows == 25 and table.schema.names == PAYLOAD_SCHEMA.names
    assert not DeltaTables(state_dir).exists(TABLE), "a plain table: no primary key, not a feature table"
    assert table.column("request_date").to_pylist()[0].isoformat() == "2026-01-02"


def test_a_full_batch_is_written_without_waiting_for_the_timer(state_dir: Path) -> None:
    logger = PayloadLogger(state_dir, flush_seconds=3600, max_rows=5)
    for i in range(5):
        logger.log(TABLE, _row(i))
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a measurement
    while not DeltaTables(state_dir).is_delta(TABLE) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert DeltaTables(state_dir).is_delta(TABLE)
    logger.close()
    assert DeltaTables(state_dir).read_any(TABLE).num_rows == 5


def test_rows_wait_while_their_table_cannot_be_written(state_dir: Path) -> None:
    tables = DeltaTables(state_dir)
    tables.create(TableMeta(TABLE, ["other"]), None, pa.schema([("other", pa.string())]))
    logger = PayloadLogger(state_dir, flush_seconds=3600, max_rows=10_000)
    logger.log(TABLE, _row(1))
    logger.flush()  # the schema does not fit: logged, kept

    tables.drop(TABLE)
    logger.close()
    assert tables.read_any(TABLE).column("databricks_request_id").to_pylist() == ["id-1"]


def test_rows_are_built_when_written_with_databricks_values() -> None:
    big = b"x" * (MAX_LOGGED_PAYLOAD_BYTES + 1)
    events = [
        _row(1, request=big),
        _row(2, request=b'{"inputs": ["\xff"]}')._replace(request_id=None),
        _row(3)._replace(request_id=None, response=None, status_code=500),
    ]
    rows = payload_table(events).to_pylist()
    assert rows[0]["request"] is None and rows[0]["logging_error_codes"] == ["MAX_REQUEST_SIZE_EXCEEDED"]
    assert rows[0]["response"] == '{"predictions": [0]}' and rows[0]["databricks_request_id"] == "id-1"
    assert rows[1]["request"] == '{"inputs": ["\ufffd"]}' and rows[1]["logging_error_codes"] == []
    generated = [rows[1]["databricks_request_id"], rows[2]["databricks_request_id"]]
    assert len(set(generated)) == 2 and all(uuid.UUID(g).version == 4 for g in generated)
    assert rows[2]["response"] is None and rows[2]["status_code"] == 500
    assert {r["request_time"] for r in rows} == {datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    assert {r["request_date"].isoformat() for r in rows} == {"2026-01-02"}


def test_a_batch_without_request_ids_gets_a_fresh_uuid4_each_and_no_error_codes() -> None:
    rows = payload_table([_row(i)._replace(request_id=None) for i in range(1000)]).to_pylist()
    ids = [r["databricks_request_id"] for r in rows]
    assert len(set(ids)) == 1000 and all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    assert all(r["logging_error_codes"] == [] and r["sampling_fraction"] == 1.0 for r in rows)


def test_config_validation_names_the_field() -> None:
    config = InferenceTableConfig.parse({"catalog_name": "main", "schema_name": "s"}, "ai", "fraud-scoring")
    assert config.payload_table == "main.s.fraud_scoring_payload"
    with pytest.raises(ApiError, match="ai.schema_name"):
        InferenceTableConfig.parse({"catalog_name": "main", "schema_name": "a.b"}, "ai", "ep")
    with pytest.raises(ApiError, match="enabled"):
        InferenceTableConfig.parse({"catalog_name": "main", "schema_name": "s", "enabled": "yes"}, "ai", "ep")
    disabled = InferenceTableConfig.parse({"enabled": False}, "ai", "ep")
    assert not disabled.enabled
