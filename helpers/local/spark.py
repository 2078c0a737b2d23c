"""``spark`` for the local twin: the few Spark calls the notebooks make, over the same Delta tables.

On Databricks a notebook's ``spark`` is the cluster's SparkSession. Locally there is no Spark cluster, so
``LocalSparkSession`` answers exactly the statements the notebooks use and refuses anything else by name:

* ``spark.sql("ALTER TABLE <name> SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")``
* ``spark.sql("DROP TABLE [IF EXISTS] <name>")``
* ``spark.table(<name>)`` -> a frame with ``toPandas()``, ``columns`` and ``count()``
* ``spark.catalog.tableExists(<name>)``
* ``spark.createDataFrame(<pandas frame>).write.mode("overwrite" | "error").saveAsTable(<name>)``: a plain
  Delta table (no primary key); overwriting with other columns needs ``.option("overwriteSchema", "true")``,
  as on Databricks
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from helpers.local.frames import to_arrow, to_pandas
from helpers.local.tables import DeltaTables, TableNotFoundError
from helpers.names import parse_uc_name

_NAME = r"(?P<name>[A-Za-z0-9_`.]+)"
_ALTER = re.compile(rf"^ALTER\s+TABLE\s+{_NAME}\s+SET\s+TBLPROPERTIES\s*\((?P<props>[^)]*)\)$", re.I)
_DROP = re.compile(rf"^DROP\s+TABLE\s+(?P<if_exists>IF\s+EXISTS\s+)?{_NAME}$", re.I)
_PROPERTY = re.compile(r"^\s*'?(?P<key>[A-Za-z0-9_.]+)'?\s*=\s*'?(?P<value>[A-Za-z0-9_]+)'?\s*$")
SUPPORTED = (
    "ALTER TABLE <name> SET TBLPROPERTIES (delta.enableChangeDataFeed = true)",
    "DROP TABLE [IF EXISTS] <name>",
)


_SAVE_MODES = ("overwrite", "error", "errorifexists")


class TableAlreadyExistsError(ValueError):
    """``saveAsTable`` in mode ``error`` on an existing table (Spark's ``TABLE_OR_VIEW_ALREADY_EXISTS``)."""


class SchemaMismatchError(ValueError):
    """An overwrite with other columns, without ``overwriteSchema`` (Delta's ``DELTA_METADATA_MISMATCH``)."""


class LocalDataFrame:
    """A read result: what the notebooks do with a Spark DataFrame (``toPandas``, ``columns``, ``count``)."""

    def __init__(self, data: pa.Table, tables: DeltaTables | None = None) -> None:
        self._data = data
        self._tables = tables

    @property
    def write(self) -> LocalDataFrameWriter:
        """``df.write``: saves the frame as a plain Delta table."""
        if self._tables is None:
            raise NotImplementedError("only a frame made with spark.createDataFrame can be written")
        return LocalDataFrameWriter(self._data, self._tables)

    @property
    def columns(self) -> list[str]:
        return list(self._data.column_names)

    def count(self) -> int:
        return self._data.num_rows

    def toPandas(self) -> pd.DataFrame:  # noqa: N802 - Spark's name
        return to_pandas(self._data)


class LocalDataFrameWriter:
    """``df.write.mode(...).option(...).saveAsTable(name)`` over the twin's Delta tables."""

    def __init__(self, data: pa.Table, tables: DeltaTables) -> None:
        self._data, self._tables = data, tables
        self._mode = "error"  # Spark's default: refuse to replace a table
        self._options: dict[str, str] = {}

    def mode(self, saveMode: str) -> LocalDataFrameWriter:  # noqa: N803 - Spark's argument name
        if saveMode.lower() not in _SAVE_MODES:
            raise NotImplementedError(
                f"the local spark saves with mode in {list(_SAVE_MODES)}; got {saveMode!r}"
            )
        self._mode = saveMode.lower()
        return self

    def option(self, key: str, value: object) -> LocalDataFrameWriter:
        self._options[key.lower()] = str(value).lower()  # Spark option keys are case-insensitive
        return self

    def saveAsTable(self, name: str) -> None:  # noqa: N802 - Spark's name
        """Write the rows as the Delta table ``name`` (created, or replaced in mode ``overwrite``)."""
        name = _uc_name(name)
        exists = self._tables.is_delta(name)
        if exists and self._mode != "overwrite":
            raise TableAlreadyExistsError(
                f"[TABLE_OR_VIEW_ALREADY_EXISTS] Cannot create table or view {name} because it already "
                'exists. Write it with .mode("overwrite") to replace its rows, or drop it first.'
            )
        if exists:
            current = self._tables.any_delta(name).schema().to_arrow()
            same = list(current.names) == self._data.column_names
            if not same and self._options.get("overwriteschema") != "true":
                raise SchemaMismatchError(
                    f"[_LEGACY_ERROR_TEMP_DELTA_0007] A schema mismatch detected when writing to the Delta "
                    f"table {name}: its columns are {list(current.names)}, the data's "
                    f'{self._data.column_names}. To overwrite the schema, add .option("overwriteSchema", '
                    '"true").'
                )
        path = self._tables.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._tables.lock(name):
            write_deltalake(
                str(path), self._data, mode="overwrite", schema_mode="overwrite" if exists else None
            )


class LocalCatalog:
    """``spark.catalog``: whether a table exists."""

    def __init__(self, tables: DeltaTables) -> None:
        self._tables = tables

    def tableExists(self, tableName: str) -> bool:  # noqa: N802, N803 - Spark's names
        """True when a Delta table (feature table or not) has this three-level name."""
        return self._tables.is_delta(_uc_name(tableName))


class LocalSparkSession:
    """The notebooks' ``spark`` off Databricks (see the module docstring for what it runs)."""

    def __init__(self, state_dir: Path) -> None:
        self._tables = DeltaTables(state_dir)
        self.catalog = LocalCatalog(self._tables)

    def createDataFrame(self, data: pd.DataFrame) -> LocalDataFrame:  # noqa: N802 - Spark's name
        """A frame from a pandas frame, to write with ``.write...saveAsTable(name)``."""
        return LocalDataFrame(to_arrow(data, "data"), self._tables)

    def table(self, tableName: str) -> LocalDataFrame:  # noqa: N803 - Spark's argument name
        """Any Delta table by its three-level name, feature table or not."""
        return LocalDataFrame(self._tables.read_any(_uc_name(tableName)))

    def sql(self, sqlQuery: str) -> LocalDataFrame:  # noqa: N803 - Spark's argument name
        statement = " ".join(sqlQuery.split()).rstrip(";")
        if match := _ALTER.match(statement):
            self._tables.set_properties(_uc_name(match["name"]), _properties(match["props"]))
        elif match := _DROP.match(statement):
            try:
                self._tables.drop_any(_uc_name(match["name"]))
            except TableNotFoundError:
                if not match["if_exists"]:
                    raise
        else:
            raise NotImplementedError(
                f"the local spark runs only {' and '.join(SUPPORTED)}; got {sqlQuery!r}. "
                "On Databricks spark.sql runs any Spark SQL."
            )
        return LocalDataFrame(pa.table({}))


def _uc_name(name: str) -> str:
    name = name.replace("`", "")
    parse_uc_name(name, "table")
    return name


def _properties(text: str) -> dict[str, str]:
    properties = {}
    for part in text.split(","):
        match = _PROPERTY.match(part)
        if match is None:
            raise ValueError(f"cannot read the table property {part.strip()!r}; write key = value")
        properties[match["key"]] = match["value"].lower()
    return properties
