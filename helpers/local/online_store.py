"""The online store: the latest row per primary key of published Delta tables, in SQLite (WAL mode).

``publish`` copies a Delta feature table into an SQLite table: a snapshot the first time, then only the rows
the change data feed reports since the last published version. Each publish is one transaction, so a reader
sees the old table or the new one, never a mix. ``read_latest`` serves lookups by primary key, keyed by the
*source* (offline) table name, as a feature spec names it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from helpers.local.fail_points import fail_point
from helpers.local.tables import DeltaTables, TableMeta
from helpers.names import parse_uc_name

log = logging.getLogger(__name__)

_BATCH_ROWS = 50_000
_KEYS_PER_QUERY = 500
# Delta operations whose change data feed holds every change as an insert or update post-image
# (SET TBLPROPERTIES changes no row: turning the change data feed on must not force a snapshot).
_INCREMENTAL_OPERATIONS = {"MERGE", "UPDATE", "SET TBLPROPERTIES"}


class TableNotPublishedError(LookupError):
    """A feature table was looked up online but never published to the online store."""


@dataclass(frozen=True)
class PublishResult:
    """What one ``publish`` did: ``snapshot`` (full copy), ``incremental`` (changed rows) or ``unchanged``."""

    source_table_name: str
    online_table_name: str
    mode: Literal["snapshot", "incremental", "unchanged"]
    delta_version: int
    rows_written: int
    row_count: int
    published_at: str


@dataclass(frozen=True)
class PublishedTableInfo:
    """One entry of the ``_published`` registry."""

    source_table_name: str
    online_table_name: str
    online_store: str | None
    primary_keys: list[str]
    timeseries_column: str | None
    columns: dict[str, str]  # column -> storage kind (see _kind)
    delta_version: int
    row_count: int
    published_at: str

    @property
    def feature_columns(self) -> list[str]:
        keys = set(self.primary_keys) | {self.timeseries_column}
        return [c for c in self.columns if c not in keys]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS _published (
    online_table_name TEXT PRIMARY KEY,
    source_table_name TEXT NOT NULL UNIQUE,
    online_store TEXT,
    primary_keys TEXT NOT NULL,
    timeseries_column TEXT,
    columns TEXT NOT NULL,
    delta_version INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    published_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _online_stores (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
"""
_REGISTRY_COLUMNS = (
    "source_table_name, online_table_name, online_store, primary_keys, timeseries_column, columns, "
    "delta_version, row_count, published_at"
)


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# Storage kinds -------------------------------------------------------------------------------------------
def _kind(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "text"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return "blob"
    return "json"


_DECLARED = {"bool": "INTEGER", "int": "INTEGER", "float": "REAL", "blob": "BLOB"}


def _to_python(column: pa.ChunkedArray | pa.Array, kind: str) -> list[Any]:
    """Column values as SQLite accepts them; conversions done in Arrow where it can."""
    if kind == "float":
        return column.cast(pa.float64()).to_pylist()
    if kind == "timestamp":
        return _timestamp_text(column).to_pylist()
    if kind == "date":
        return column.cast(pa.string()).to_pylist()
    if kind == "json":
        return [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()]
    return column.to_pylist()


def _timestamp_text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """ISO text with microseconds, in UTC for zone-aware columns: the form ``_key_for`` builds for keys."""
    tz = column.type.tz
    us = pc.cast(column, pa.timestamp("us", tz=tz), safe=False)
    if tz:
        us = us.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    return pc.strftime(us, format="%Y-%m-%dT%H:%M:%S")  # %S carries the fraction for "us"


def _from_sqlite(kind: str) -> Callable[[Any], Any] | None:
    if kind == "bool":
        return bool
    if kind == "timestamp":
        return datetime.fromisoformat
    if kind == "date":
        return date.fromisoformat
    if kind == "json":
        return json.loads
    return None


_MISS = object()
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64 = range(-(2**63), 2**63)
_EXPECTED = {
    "int": "an integer",
    "float": "a finite number",
    "text": "a string",
    "bool": "true or false",
    "timestamp": "an ISO 8601 timestamp",
    "date": "an ISO 8601 date (YYYY-MM-DD)",
}


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 100 else text[:100] + "..."


class KeyTypeError(ValueError):
    """A lookup key that cannot be a value of its key column (``"abc"`` or ``NaN`` for an integer key)."""


def _key_for(value: Any, kind: str) -> Any:
    """A request value as the stored key type; ``_MISS`` for null (not found); ``KeyTypeError`` otherwise.

    A number sent as a string (``"182"``) is that number when it reads exactly as one: ASCII digits only,
    so ``"1; DROP TABLE users"`` or other scripts' digits are refused, not looked up.
    """
    if value is None:
        return _MISS
    if isinstance(value, bool) and kind != "bool":
        raise KeyTypeError(f"must be {_EXPECTED.get(kind, kind)}, got {value!r}")
    try:
        if kind == "int":
            if isinstance(value, str):
                text = value.strip()
                key = int(text) if text.isascii() and _INTEGER.fullmatch(text) else None
            elif isinstance(value, float):
                key = int(value) if value.is_integer() else None
            else:
                key = value if isinstance(value, int) else None
            if key is not None and key in _INT64:
                return key
        elif kind == "float":
            number = float(value) if isinstance(value, (int, float, str)) else math.nan
            if math.isfinite(number):
                return number
        elif kind == "text":
            if isinstance(value, str):
                return value
            if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
                return str(value)
        elif kind == "bool":
            if isinstance(value, str):
                flag = {"true": 1, "false": 0}.get(value.strip().lower())
                if flag is not None:
                    return flag
            elif isinstance(value, (bool, int)):
                return int(bool(value))
        elif kind == "timestamp":
            stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            if stamp.tzinfo is not None:
                stamp = stamp.astimezone(UTC).replace(tzinfo=None)
            return stamp.isoformat(timespec="microseconds")
        elif kind == "date":
            return (value if isinstance(value, date) else date.fromisoformat(str(value))).isoformat()
        else:
            return _MISS  # a key column of another type: the key is not found
    except (TypeError, ValueError, OverflowError):
        pass
    raise KeyTypeError(f"must be {_EXPECTED[kind]}, got {_shown(value)}")


# Arrow helpers ---------------------------------------------------------------------------------------------
def latest_per_key(data: pa.Table, primary_keys: list[str], timeseries_column: str | None) -> pa.Table:
    """One row per primary key (the newest by ``timeseries_column``), sorted by the keys."""
    order = [(k, "ascending") for k in primary_keys]
    if timeseries_column:
        order.append((timeseries_column, "descending"))
    data = data.sort_by(order)
    if not timeseries_column or data.num_rows < 2:
        return data
    changed = None
    for key in primary_keys:
        column = data[key]
        differs = pc.not_equal(column.slice(1), column.slice(0, data.num_rows - 1))
        changed = differs if changed is None else pc.or_(changed, differs)
    first = pa.concat_arrays([pa.array([True]), *changed.chunks])  # type: ignore[union-attr]
    return data.filter(first)


def _rows(data: pa.Table, kinds: dict[str, str]) -> Iterator[list[tuple[Any, ...]]]:
    for batch in data.to_batches(max_chunksize=_BATCH_ROWS):
        columns = [_to_python(batch.column(name), kinds[name]) for name in kinds]
        yield list(zip(*columns, strict=True))


# The store -------------------------------------------------------------------------------------------------
class _ReaderState(threading.local):
    conn: sqlite3.Connection | None = None
    data_version: int = -1
    registry: dict[str, PublishedTableInfo]


class OnlineStore:
    """SQLite database ``<state_dir>/online.db``: published tables plus the ``_published`` registry."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "online.db"
        self._local = _ReaderState()
        self._initialised = False

    # connections
    def _connect(self) -> sqlite3.Connection:
        if not self._initialised:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=600, isolation_level=None, cached_statements=256)
        if not self._initialised:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._initialised = True
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from the start; rolled back on any error."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (each thread keeps one, with its prepared statements)."""
        conn = self._local.conn
        if conn is None:
            conn = self._local.conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.registry = {}
        return conn

    def _registry_entry(self, conn: sqlite3.Connection, source_table_name: str) -> PublishedTableInfo:
        """The registry entry, cached until another connection commits (``PRAGMA data_version``)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._local.data_version:
            self._local.registry = {}
            self._local.data_version = version
        info = self._local.registry.get(source_table_name)
        if info is None:
            info = _fetch_entry(conn, "source_table_name", source_table_name)
            if info is None:
                raise TableNotPublishedError(
                    f"feature table {source_table_name} is not published to an online store, and served "
                    "models look features up online only; publish it with fe.publish_table(online_store=..., "
                    f"source_table_name={source_table_name!r}, online_table_name=...) before serving"
                )
            self._local.registry[source_table_name] = info
        return info

    # reads
    def read_latest(
        self, source_table_name: str, keys: Sequence[tuple[Any, ...]], feature_names: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        """Feature values per primary-key tuple, in order; ``None`` for a key that is not there."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            info = self._registry_entry(conn, source_table_name)
            unknown = [f for f in feature_names if f not in info.columns]
            if unknown:
                raise ValueError(
                    f"feature(s) {unknown} are not columns of the online table {info.online_table_name} "
                    f"(published from {source_table_name}); its features: {info.feature_columns}"
                )
            return _lookup(conn, info, keys, list(feature_names))
        finally:
            conn.execute("COMMIT")

    def list_published(self) -> list[PublishedTableInfo]:
        conn = self._connect()
        try:
            rows = conn.execute(f"SELECT {_REGISTRY_COLUMNS} FROM _published ORDER BY online_table_name")
            return [_info(row) for row in rows]
        finally:
            conn.close()

    # writes
    def publish(
        self,
        source_table_name: str,
        online_table_name: str,
        tables: DeltaTables,
        *,
        snapshot: bool = False,
        online_store: str | None = None,
    ) -> PublishResult:
        """Copy the latest row per key of ``source_table_name`` into ``online_table_name`` in one transaction.

        The first publish (or ``snapshot=True``, or a change the feed cannot replay: an overwrite, a delete, a
        new column) copies everything; later ones upsert only the rows changed since the published version.
        """
        parse_uc_name(source_table_name, "source table")
        parse_uc_name(online_table_name, "online table")
        meta = tables.meta(source_table_name)
        with self._write_transaction() as conn:
            # Read the version only once holding the write lock: a publish that read it earlier could
            # otherwise land after a newer one and roll the online table back.
            version = tables.version(source_table_name)
            result = self._publish_locked(
                conn, meta, online_table_name, tables, version, snapshot, online_store
            )
            fail_point("online_store.publish.before_commit")
        log.info("published %s -> %s: %s", source_table_name, online_table_name, result)
        return result

    def _publish_locked(
        self,
        conn: sqlite3.Connection,
        meta: TableMeta,
        online_table_name: str,
        tables: DeltaTables,
        version: int,
        snapshot: bool,
        online_store: str | None,
    ) -> PublishResult:
        source = meta.name
        by_online = _fetch_entry(conn, "online_table_name", online_table_name)
        if by_online is not None and by_online.source_table_name != source:
            raise ValueError(
                f"online_table_name {online_table_name} already holds {by_online.source_table_name}; "
                "choose another name or drop it first"
            )
        previous = _fetch_entry(conn, "source_table_name", source)
        if previous is not None and previous.online_table_name != online_table_name:
            raise ValueError(
                f"source_table_name {source} is already published as {previous.online_table_name}; "
                "publish it under that online_table_name"
            )
        schema = tables.schema(source)
        keys = meta.entity_keys
        kinds = {f.name: _kind(f.type) for f in schema}
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        replayable = (
            previous is not None
            and not snapshot
            and previous.columns == kinds
            and previous.primary_keys == keys
            and previous.timeseries_column == meta.timeseries_column
            and _feed_replays(tables, source, previous.delta_version, version)
        )
        if replayable and previous.delta_version == version:  # type: ignore[union-attr]
            mode, written = "unchanged", 0
        elif replayable:
            mode = "incremental"
            written = _upsert_changes(
                conn, tables, meta, online_table_name, kinds, previous.delta_version, version
            )  # type: ignore[union-attr]
        else:
            mode = "snapshot"
            data = latest_per_key(tables.read(source, version=version), keys, meta.timeseries_column)
            written = _replace_table(conn, online_table_name, data, kinds, keys)
        row_count = conn.execute(f"SELECT count(*) FROM {_q(online_table_name)}").fetchone()[0]
        conn.execute(
            f"INSERT OR REPLACE INTO _published ({_REGISTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                source,
                online_table_name,
                online_store if online_store is not None else (previous.online_store if previous else None),
                json.dumps(keys),
                meta.timeseries_column,
                json.dumps(kinds),
                version,
                row_count,
                now,
            ),
        )
        return PublishResult(source, online_table_name, mode, version, written, row_count, now)  # type: ignore[arg-type]

    def drop(self, online_table_name: str) -> None:
        """Remove an online table and its registry entry."""
        with self._write_transaction() as conn:
            if _fetch_entry(conn, "online_table_name", online_table_name) is None:
                raise TableNotPublishedError(f"online table {online_table_name} does not exist")
            conn.execute(f"DROP TABLE IF EXISTS {_q(online_table_name)}")
            conn.execute("DELETE FROM _published WHERE online_table_name = ?", (online_table_name,))

    # named online stores (what create_online_store makes; the data all lives in this one database)
    def save_store(self, name: str, spec: dict[str, Any]) -> None:
        conn = self._connect()
        try:
            conn.execute("INSERT INTO _online_stores (name, spec) VALUES (?, ?)", (name, json.dumps(spec)))
        except sqlite3.IntegrityError:
            raise ValueError(f"online store {name!r} already exists") from None
        finally:
            conn.close()

    def delete_store(self, name: str) -> None:
        """Remove a named online store and every online table published to it."""
        if self.get_store(name) is None:
            raise LookupError(f"online store {name!r} does not exist")
        for info in self.list_published():
            if info.online_store == name:
                self.drop(info.online_table_name)
        conn = self._connect()
        try:
            conn.execute("DELETE FROM _online_stores WHERE name = ?", (name,))
        finally:
            conn.close()

    def get_store(self, name: str) -> dict[str, Any] | None:
        conn = self._connect()
        try:
            row = conn.execute("SELECT spec FROM _online_stores WHERE name = ?", (name,)).fetchone()
            return None if row is None else json.loads(row[0])
        finally:
            conn.close()


# Registry rows ---------------------------------------------------------------------------------------------
def _info(row: tuple[Any, ...]) -> PublishedTableInfo:
    source, online, store, pks, ts, columns, version, count, at = row
    return PublishedTableInfo(
        source, online, store, json.loads(pks), ts, json.loads(columns), version, count, at
    )


def _fetch_entry(conn: sqlite3.Connection, column: str, value: str) -> PublishedTableInfo | None:
    row = conn.execute(f"SELECT {_REGISTRY_COLUMNS} FROM _published WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else _info(row)


# Publishing ------------------------------------------------------------------------------------------------
def _feed_replays(tables: DeltaTables, name: str, since: int, until: int) -> bool:
    """Whether the commits after ``since`` only insert or update rows (so their change feed is complete)."""
    if until < since:
        return False  # the table was recreated
    if until == since:
        return True
    table = tables.delta(name)
    for commit in table.history(limit=table.version() - since):
        if not since < commit.get("version", until) <= until:
            continue
        operation = commit.get("operation")
        mode = (commit.get("operationParameters") or {}).get("mode")
        deleted = (commit.get("operationMetrics") or {}).get("num_target_rows_deleted", 0)
        appended = operation == "WRITE" and mode == "Append"
        if not (appended or (operation in _INCREMENTAL_OPERATIONS and not deleted)):
            log.info(
                "%s: commit %s (%s %s) needs a snapshot publish", name, commit.get("version"), operation, mode
            )
            return False
    return True


def _create_table(
    conn: sqlite3.Connection, name: str, kinds: dict[str, str], primary_keys: list[str]
) -> None:
    columns = ", ".join(f"{_q(c)} {_DECLARED.get(k, 'TEXT')}" for c, k in kinds.items())
    keys = ", ".join(_q(k) for k in primary_keys)
    conn.execute(f"CREATE TABLE {_q(name)} ({columns}, PRIMARY KEY ({keys})) WITHOUT ROWID")


def _insert_sql(name: str, kinds: dict[str, str]) -> str:
    return f"INSERT INTO {_q(name)} ({', '.join(map(_q, kinds))}) VALUES ({', '.join('?' * len(kinds))})"


def _replace_table(
    conn: sqlite3.Connection, name: str, data: pa.Table, kinds: dict[str, str], primary_keys: list[str]
) -> int:
    """Build ``name`` anew beside the old one and swap it in (the caller holds the transaction)."""
    staging = f"{name}__staging"
    conn.execute(f"DROP TABLE IF EXISTS {_q(staging)}")
    _create_table(conn, staging, kinds, primary_keys)
    sql = _insert_sql(staging, kinds)
    for rows in _rows(data.select(list(kinds)), kinds):
        conn.executemany(sql, rows)
    conn.execute(f"DROP TABLE IF EXISTS {_q(name)}")
    conn.execute(f"ALTER TABLE {_q(staging)} RENAME TO {_q(name)}")
    return data.num_rows


def _upsert_changes(
    conn: sqlite3.Connection,
    tables: DeltaTables,
    meta: TableMeta,
    name: str,
    kinds: dict[str, str],
    since: int,
    version: int,
) -> int:
    """Upsert the current rows of every key the change feed reports after ``since``.

    The feed names *which* keys changed; their values come from the table at ``version`` (a key changed by
    two merges appears twice in the feed, and the feed's row order says nothing about which is newer).
    """
    changes = tables.changes_since(meta.name, since)
    if changes.num_rows == 0:
        return 0
    pks = meta.entity_keys
    current = tables.read(meta.name, version=version)
    changed_keys = changes.select(pks).group_by(pks).aggregate([])
    if len(pks) == 1:
        keep = pc.is_in(current[pks[0]], value_set=changed_keys[pks[0]].combine_chunks())
        rows = current.filter(keep)
    else:
        rows = current.join(changed_keys, keys=pks, join_type="inner")
    rows = latest_per_key(rows, pks, meta.timeseries_column).select(list(kinds))
    updates = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in kinds if c not in pks)
    conflict = ", ".join(map(_q, pks))
    sql = _insert_sql(name, kinds) + (
        f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        if updates
        else f" ON CONFLICT ({conflict}) DO NOTHING"
    )
    for batch in _rows(rows, kinds):
        conn.executemany(sql, batch)
    return rows.num_rows


# Lookups ---------------------------------------------------------------------------------------------------
def _lookup(
    conn: sqlite3.Connection, info: PublishedTableInfo, keys: Sequence[tuple[Any, ...]], features: list[str]
) -> list[dict[str, Any] | None]:
    pks = info.primary_keys
    key_kinds = [info.columns[k] for k in pks]
    wanted: list[tuple[Any, ...] | None] = []
    for key in keys:
        if len(key) != len(pks):
            raise ValueError(
                f"lookup key {key!r} must have one value per primary key {pks} of {info.source_table_name}"
            )
        try:
            coerced = tuple(_key_for(v, kind) for v, kind in zip(key, key_kinds, strict=True))
        except KeyTypeError:
            raise _key_type_error(info, key, key_kinds) from None
        wanted.append(None if _MISS in coerced else coerced)
    distinct = list(dict.fromkeys(k for k in wanted if k is not None))
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    converters = [(f, _from_sqlite(info.columns[f])) for f in features]
    selected = ", ".join(map(_q, [*pks, *features]))
    table = _q(info.online_table_name)
    width = len(pks)
    it = iter(distinct)
    while chunk := list(islice(it, _KEYS_PER_QUERY)):
        if width == 1:
            where = f"{_q(pks[0])} IN ({', '.join('?' * len(chunk))})"
        else:
            row = "(" + ", ".join("?" * width) + ")"
            where = f"({', '.join(map(_q, pks))}) IN (VALUES {', '.join([row] * len(chunk))})"
        params = [v for key in chunk for v in key]
        for row_values in conn.execute(f"SELECT {selected} FROM {table} WHERE {where}", params):
            values = row_values[width:]
            found[tuple(row_values[:width])] = {
                f: (v if conv is None or v is None else conv(v))
                for (f, conv), v in zip(converters, values, strict=True)
            }
    return [None if k is None else found.get(k) for k in wanted]


def _key_type_error(info: PublishedTableInfo, key: tuple[Any, ...], kinds: list[str]) -> KeyTypeError:
    """The error naming the first key column whose value cannot be of its type."""
    for column, value, kind in zip(info.primary_keys, key, kinds, strict=True):
        try:
            _key_for(value, kind)
        except KeyTypeError as err:
            return KeyTypeError(
                f"lookup key {column} of {info.source_table_name} {err} (the key column's type: {kind})"
            )
    return KeyTypeError(f"lookup key {key!r} does not match the key columns of {info.source_table_name}")
