"""``LocalFeatureEngineeringClient``: the methods and argument names of Databricks' FeatureEngineeringClient,
over Delta tables, an SQLite online store and a sqlite-backed MLflow registry.

It returns pandas DataFrames where the real client returns Spark ones, and accepts pandas or Spark input.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pyarrow as pa

from helpers.local.feature_spec import FeatureSpec
from helpers.local.frames import to_arrow, to_pandas
from helpers.local.functions import FunctionRegistry
from helpers.local.offline_join import join_features
from helpers.local.publishing import OnlinePublishingMixin, feature_spec_from_features
from helpers.local.tables import DeltaTables, TableMeta

_UNSET: Any = object()


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class LocalTrainingSet:
    """What ``create_training_set`` returns: the joined frame on demand, and the spec to log with a model."""

    def __init__(
        self, df: pa.Table, spec: FeatureSpec, labels: list[str], client: LocalFeatureEngineeringClient
    ):
        self._df = df
        self._spec = spec
        self._labels = labels
        self._client = client
        self._joined: pa.Table | None = None

    @property
    def feature_spec(self) -> FeatureSpec:
        return self._spec

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def _table(self) -> pa.Table:
        if self._joined is None:
            self._joined = join_features(
                self._df, self._spec, self._client._tables, self._client._functions.callable
            )
        return self._joined

    def load_df(self) -> pd.DataFrame:
        """The training frame: ``df``'s columns plus the features, without ``exclude_columns``."""
        return to_pandas(self._table())

    def input_example(self, rows: int = 5) -> pd.DataFrame:
        """The first ``rows`` of ``df``, only the columns a request carries (keys, request-time values)."""
        head = self._df.slice(0, rows)
        return to_pandas(head.select([c for c in self._spec.request_columns if c in head.column_names]))

    def get_output_columns(self) -> list[str]:
        return self._table().column_names


class LocalFeatureEngineeringClient(OnlinePublishingMixin):
    """Feature tables, training sets, feature-aware models, online publishing and feature specs, locally."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = Path(state_dir)
        self._tables = DeltaTables(self._state_dir)
        self._functions = FunctionRegistry(self._state_dir)

    # Feature tables -------------------------------------------------------------------------------------
    def create_table(
        self,
        *,
        name: str,
        primary_keys: str | list[str],
        df: Any = None,
        timeseries_column: str | None = None,
        partition_columns: str | list[str] | None = None,
        schema: Any = None,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        **kwargs: Any,
    ):
        """Create a Delta feature table with primary keys (and an optional time-series column).

        ``schema`` is a Spark ``StructType``, as the real client takes it (an Arrow schema works too).
        """
        keys = _as_list(primary_keys)
        if timeseries_column is not None and timeseries_column not in keys:
            keys.append(timeseries_column)  # Databricks: the timeseries column is part of the primary keys
        if not [k for k in keys if k != timeseries_column]:
            raise ValueError("primary_keys must name at least one column besides the timeseries_column")
        data = None if df is None else to_arrow(df)
        meta = TableMeta(
            name, keys, timeseries_column, _as_list(partition_columns), description, dict(tags or {})
        )
        self._tables.create(meta, data, _arrow_schema(schema))
        return self.get_table(name=name)

    def write_table(
        self,
        *,
        name: str,
        df: Any,
        mode: str = "merge",
        checkpoint_location: str | None = None,
        trigger: dict[str, Any] = {"processingTime": "5 seconds"},  # noqa: B006 - the real default
    ) -> None:
        """Upsert on the primary keys; ``merge`` is the only mode, as on Databricks."""
        if mode != "merge":
            raise ValueError(
                f"Unsupported mode '{mode}'. 'merge' is the only supported mode. If you want to overwrite a "
                "table, run SQL 'DELETE FROM <table name>;' to delete all rows, or drop and recreate the "
                "table "
                "before calling this method."
            )
        self._tables.merge(name, to_arrow(df))

    def read_table(self, *, name: str, **kwargs: Any) -> pd.DataFrame:
        """A feature table's rows; a plain Delta table (no primary key) raises, as on Databricks."""
        return to_pandas(self._tables.read(name))

    def get_table(self, *, name: str):
        from databricks.ml_features.entities.feature_table import FeatureTable

        meta = self._tables.meta(name)
        schema = self._tables.schema(name)
        return FeatureTable(
            name=name,
            table_id=str(self._tables.path(name)),
            description=meta.description,
            primary_keys=meta.primary_keys,
            partition_columns=meta.partition_columns,
            features=[c for c in schema.names if c not in meta.key_columns],
            timestamp_keys=[meta.timeseries_column] if meta.timeseries_column else [],
            tags=meta.tags,
        )

    def drop_table(self, *, name: str) -> None:
        if self._tables.is_delta(name) and not self._tables.exists(name):
            raise ValueError(  # the real client's words
                f"Delta table '{name}' is not a feature table. Use spark API to drop the delta table: "
                f'spark.sql("DROP TABLE {name}").'
            )
        self._tables.drop(name)

    # Training sets and models ---------------------------------------------------------------------------
    def create_training_set(
        self,
        *,
        df: Any,
        feature_lookups: list | None = None,
        feature_spec: str | None = None,
        features: list | None = None,
        label: str | list[str] | None,
        exclude_columns: list[str] | None = None,
        use_spark_native_join: bool = False,
        use_timeseries_filtering: bool = False,
        **kwargs: Any,
    ) -> LocalTrainingSet:
        """Join features onto ``df``; point-in-time where a lookup has a ``timestamp_lookup_key``."""
        if feature_spec is not None:
            spec = self._load_feature_spec(feature_spec)
            spec.exclude_columns = list(dict.fromkeys([*spec.exclude_columns, *(exclude_columns or [])]))
        else:
            spec = feature_spec_from_features(
                [*(feature_lookups or []), *(features or [])], exclude_columns, self._tables, self._functions
            )
        data = to_arrow(df)
        labels = _as_list(label)
        missing = [c for c in labels if c not in data.column_names]
        if missing:
            raise ValueError(f"label column(s) {missing} are not columns of df")
        training_set = LocalTrainingSet(data, spec, labels, self)
        spec.model_input_columns = [c for c in training_set.get_output_columns() if c not in labels]
        return training_set

    def log_model(
        self,
        *,
        model: Any,
        artifact_path: str,
        flavor: ModuleType,
        training_set: LocalTrainingSet | None = None,
        registered_model_name: str | None = None,
        await_registration_for: int | None = _UNSET,
        infer_input_example: bool = False,
        extra_pip_requirements: list[str] | None = None,
        **kwargs: Any,
    ):
        """Log ``model``; with a training set, package it so it looks its own features up at predict time."""
        if training_set is None:
            return flavor.log_model(
                model, name=artifact_path, registered_model_name=registered_model_name, **kwargs
            )
        from helpers.local.lookup_model import log_lookup_model

        return log_lookup_model(
            model=model,
            name=artifact_path,
            flavor=flavor,
            training_set=training_set,
            registered_model_name=registered_model_name,
            infer_input_example=infer_input_example,
            extra_pip_requirements=extra_pip_requirements,
            **kwargs,
        )

    def score_batch(
        self,
        *,
        model_uri: str,
        df: Any,
        result_type: str = "double",
        env_manager: str = "local",
        params: dict[str, Any] | None = None,
        use_spark_native_join: bool = False,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Look features up from the offline tables exactly as the training set did, then predict.

        Returns ``df``'s columns, the features and a ``prediction`` column.
        """
        from helpers.local.lookup_model import load_packaged_model

        packaged = load_packaged_model(model_uri)
        spec = packaged.spec
        data = to_arrow(df)
        missing = [c for c in spec.request_columns if c not in data.column_names]
        if missing:
            raise ValueError(f"df is missing column(s) {missing} that model {model_uri} needs")
        keep_all = FeatureSpec(spec.lookups, spec.functions, [], spec.model_input_columns)
        joined = to_pandas(join_features(data, keep_all, self._tables, self._functions.callable))
        predictions = packaged.predict_features(joined, params)
        return joined.assign(prediction=predictions)


def _arrow_schema(schema: Any) -> pa.Schema | None:
    """A ``create_table(schema=...)`` as Arrow: a Spark ``StructType`` converted, an Arrow schema as is."""
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    if not isinstance(schema, StructType):
        raise TypeError(f"schema must be a pyspark.sql.types.StructType, got {type(schema).__name__}")
    return to_arrow_schema(schema)
