"""``spark`` for the local twin: the few Spark calls the notebooks make, over the same Delta tables.

On Databricks a notebook's ``spark`` is the cluster's SparkSession. Locally there is no Spark cluster, so
``LocalSparkSession`` answers exactly the statements the notebooks use and refuses anything else by name:

* ``spark.sql("ALTER TABLE <name> SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")``
* ``spark.sql("DROP TABLE [IF EXISTS] <name>")``
* ``spark.table(<name>)`` -> a frame with ``toPandas()``, ``columns`` and ``count()``
* ``spark.catalog.tableExists(<name>)``
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa

from helpers.local.frames import to_pandas
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


class LocalDataFrame:
    """A read result: what the notebooks do with a Spark DataFrame (``toPandas``, ``columns``, ``count``)."""

    def __init__(self, data: pa.Table) -> None:
        self._data = data

    @property
    def columns(self) -> list[str]:
        return list(self._data.column_names)

    def count(self) -> int:
        return self._data.num_rows

    def toPandas(self) -> pd.DataFrame:  # noqa: N802 - Spark's name
        return to_pandas(self._data)


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
