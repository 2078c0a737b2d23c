"""Delta tables addressed by Unity Catalog names, with primary keys and merge-on-key writes."""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from helpers.local.fail_points import fail_point
from helpers.names import parse_uc_name


class TableNotFoundError(LookupError):
    """Raised when a table name does not resolve to an existing table."""


class SchemaMismatchError(ValueError):
    """Raised when written data does not match the table's columns or types."""


class NotAFeatureTableError(ValueError):
    """Raised when a feature-table method meets a plain Delta table (one without a primary key)."""


CHANGE_DATA_FEED = "delta.enableChangeDataFeed"
# The table properties the local ``ALTER TABLE ... SET TBLPROPERTIES`` accepts (what the notebooks set).
SETTABLE_PROPERTIES = (CHANGE_DATA_FEED,)


@dataclass(frozen=True)
class TableMeta:
    """What Unity Catalog keeps about a feature table besides its data."""

    name: str
    primary_keys: list[str]
    timeseries_column: str | None = None
    partition_columns: list[str] = field(default_factory=list)
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key_columns(self) -> list[str]:
        """Columns that identify a row: the primary keys, which include the timeseries column, if any."""
        extra = [self.timeseries_column] if self.timeseries_column not in (None, *self.primary_keys) else []
        return self.primary_keys + extra

    @property
    def entity_keys(self) -> list[str]:
        """The keys a lookup gives: the primary keys without the timeseries column."""
        return [k for k in self.primary_keys if k != self.timeseries_column]


class DeltaTables:
    """Delta tables under ``<state_dir>/tables/<catalog>/<schema>/<table>`` plus a metadata file each."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "tables"

    def path(self, name: str) -> Path:
        uc = parse_uc_name(name)
        return self.root / uc.catalog / uc.schema / uc.name

    def _meta_path(self, name: str) -> Path:
        return self.path(name).with_suffix(".feature_table.json")

    def is_delta(self, name: str) -> bool:
        """Whether ``name`` is a Delta table, a feature table or a plain one."""
        return (self.path(name) / "_delta_log").is_dir()

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a feature table (a Delta table with a primary key)."""
        return self.is_delta(name) and self._meta_path(name).exists()

    def _require(self, name: str) -> None:
        if self.exists(name):
            return
        if self.is_delta(name):  # Databricks' words (databricks.ml_features.entities.feature_table)
            raise NotAFeatureTableError(
                f"Table {name} can't be used as a feature table because it has no primary key constraint "
                "defined. Read it as a plain table with spark.table(name), or add a primary key with "
                f"'ALTER TABLE {name} ADD CONSTRAINT pk PRIMARY KEY (key_column [,...])'."
            )
        raise TableNotFoundError(f"table {name} does not exist; create it first with create_table")

    def any_delta(self, name: str) -> DeltaTable:
        """Any Delta table, feature table or not (what ``spark.table`` reads)."""
        if not self.is_delta(name):
            raise TableNotFoundError(f"[TABLE_OR_VIEW_NOT_FOUND] The table or view {name} cannot be found.")
        return DeltaTable(str(self.path(name)))

    def properties(self, name: str) -> dict[str, str]:
        return dict(self.any_delta(name).metadata().configuration)

    def set_properties(self, name: str, properties: dict[str, str]) -> None:
        """``ALTER TABLE ... SET TBLPROPERTIES``: a commit only when a value changes."""
        _check_settable(properties)
        current = self.properties(name)
        changed = {k: v for k, v in properties.items() if current.get(k) != v}
        if changed:
            with self.lock(name):
                self.any_delta(name).alter.set_table_properties(changed)

    def change_data_feed(self, name: str) -> bool:
        return self.properties(name).get(CHANGE_DATA_FEED, "false").lower() == "true"

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Serialize writers to one table (across processes): a merge never races another merge."""
        lock_path = self.path(name).with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(
        self,
        meta: TableMeta,
        data: pa.Table | None,
        schema: pa.Schema | None,
        properties: dict[str, str] | None = None,
    ) -> None:
        """Create the table; ``properties`` are table properties (``CREATE TABLE ... TBLPROPERTIES``)."""
        _check_settable(properties or {})
        if self.exists(meta.name):
            raise ValueError(f"table {meta.name} already exists")
        if data is None and schema is None:
            raise ValueError("create_table needs a df or a schema")
        schema = schema or data.schema  # type: ignore[union-attr]
        missing = [c for c in meta.key_columns + meta.partition_columns if c not in schema.names]
        if missing:
            raise SchemaMismatchError(f"key column(s) {missing} are not columns of the table {meta.name}")
        if data is not None:
            _check_unique_keys(data, meta)
        path = self.path(meta.name)
        with self.lock(meta.name):
            if path.exists():  # leftovers of a create that died half-way
                shutil.rmtree(path)
            write_deltalake(
                str(path),
                data if data is not None else schema.empty_table(),
                partition_by=meta.partition_columns or None,
                description=meta.description,
                configuration=properties or None,
            )
            tmp = self._meta_path(meta.name).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(meta), indent=2))
            tmp.replace(self._meta_path(meta.name))

    def meta(self, name: str) -> TableMeta:
        self._require(name)
        return TableMeta(**json.loads(self._meta_path(name).read_text()))

    def delta(self, name: str) -> DeltaTable:
        self._require(name)
        return DeltaTable(str(self.path(name)))

    def schema(self, name: str) -> pa.Schema:
        return pa.schema(self.delta(name).schema().to_arrow())

    def read(self, name: str, version: int | None = None) -> pa.Table:
        table = self.delta(name)
        if version is not None:
            table.load_as_version(version)
        return _plain_types(pa.table(table.to_pyarrow_dataset().to_table()))

    def read_any(self, name: str) -> pa.Table:
        """The rows of any Delta table, feature table or not."""
        return _plain_types(pa.table(self.any_delta(name).to_pyarrow_dataset().to_table()))

    def version(self, name: str) -> int:
        return self.delta(name).version()

    def changes_since(self, name: str, version: int) -> pa.Table:
        """Rows inserted or updated after ``version`` (Delta change data feed, post-images only)."""
        cdf = _plain_types(pa.table(self.delta(name).load_cdf(starting_version=version + 1).read_all()))
        keep = pc.is_in(cdf["_change_type"], pa.array(["insert", "update_postimage"]))
        return cdf.filter(keep).drop_columns(["_change_type", "_commit_version", "_commit_timestamp"])

    def merge(self, name: str, data: pa.Table) -> None:
        """Upsert rows on the key columns; columns the table lacks are added as new features."""
        meta = self.meta(name)
        data = _conform(data, self.schema(name), name)
        _check_unique_keys(data, meta)
        predicate = " AND ".join(f"t.`{c}` = s.`{c}`" for c in meta.key_columns)
        with self.lock(name):
            fail_point("tables.merge.locked")
            (
                self.delta(name)
                .merge(data, predicate=predicate, source_alias="s", target_alias="t", merge_schema=True)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            fail_point("tables.merge.committed")

    def drop(self, name: str) -> None:
        self._require(name)
        self.drop_any(name)

    def drop_any(self, name: str) -> None:
        """Drop a Delta table, feature table or not (``DROP TABLE``)."""
        self.any_delta(name)
        with self.lock(name):
            self._meta_path(name).unlink(missing_ok=True)
            shutil.rmtree(self.path(name))


def _check_settable(properties: dict[str, str]) -> None:
    unknown = [k for k in properties if k not in SETTABLE_PROPERTIES]
    if unknown:
        raise ValueError(f"table properties {unknown} are not supported locally; use {SETTABLE_PROPERTIES}")


def _conform(data: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """Order and cast ``data`` to the table's schema, new columns last; raise naming a column that misfits."""
    missing = [c for c in schema.names if c not in data.column_names]
    if missing:
        raise SchemaMismatchError(f"df is missing column(s) {missing} of the table {name}")
    new = [data.schema.field(c) for c in data.column_names if c not in schema.names]
    columns = []
    for target in schema:
        column = data[target.name]
        if column.type != target.type:
            try:
                column = column.cast(target.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise SchemaMismatchError(
                    f"column {target.name!r} of {name} has type {target.type}; got {data[target.name].type}"
                    f" that does not convert ({err})"
                ) from None
        columns.append(column)
    columns += [data[f.name] for f in new]
    return pa.Table.from_arrays(columns, schema=pa.schema([*schema, *new]))


def _check_unique_keys(data: pa.Table, meta: TableMeta) -> None:
    keys = meta.key_columns
    nulls = [k for k in keys if data[k].null_count]
    if nulls:
        raise ValueError(f"key column(s) {nulls} of {meta.name} contain nulls")
    if data.num_rows and data.group_by(keys).aggregate([]).num_rows != data.num_rows:
        raise ValueError(f"data for {meta.name} has duplicate rows for the key {keys}")


def _plain_types(table: pa.Table) -> pa.Table:
    """Cast Arrow view types (which delta-rs may return) to the plain ones pandas and DuckDB expect."""
    views = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    if not any(f.type in views for f in table.schema):
        return table
    return table.cast(pa.schema([f.with_type(views.get(f.type, f.type)) for f in table.schema]))
