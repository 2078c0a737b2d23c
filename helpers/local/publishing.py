"""Online stores, online publishing and feature specs: the ``FeatureEngineeringClient`` methods for them.

``OnlinePublishingMixin`` gives ``LocalFeatureEngineeringClient`` ``create_online_store``,
``get_online_store``, ``publish_table``, ``create_feature_spec`` and ``delete_feature_spec`` with the real
signatures, returning the real entity classes. ``feature_spec_from_features`` turns ``FeatureLookup`` /
``FeatureFunction`` objects into the JSON :class:`FeatureSpec` that training sets, logged models and Feature
Serving endpoints share.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from helpers.local import continuous_sync
from helpers.local.feature_spec import FeatureSpec, FunctionSpec, LookupSpec
from helpers.local.functions import FunctionRegistry
from helpers.local.online_store import OnlineStore
from helpers.local.tables import DeltaTables, TableNotFoundError
from helpers.names import parse_uc_name

log = logging.getLogger(__name__)

PUBLISH_MODES = ("TRIGGERED", "SNAPSHOT", "CONTINUOUS")
CAPACITIES = ("CU_1", "CU_2", "CU_4", "CU_8")
_DEFAULT_TRIGGER = {"processingTime": "5 minutes"}
_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
# A new store is STARTING for this long, then AVAILABLE (on Databricks: minutes). Read at create time.
START_SECONDS_ENV = "HELPERS_ONLINE_STORE_START_SECONDS"
DEFAULT_START_SECONDS = 3.0
_CDF_MODES = ("TRIGGERED", "CONTINUOUS")


# Feature specs on disk -------------------------------------------------------------------------------------
def feature_spec_path(state_dir: Path, name: str) -> Path:
    """``<state_dir>/feature_specs/<catalog>/<schema>/<name>.json`` (the name is validated first)."""
    uc = parse_uc_name(name, "feature spec")
    return Path(state_dir) / "feature_specs" / uc.catalog / uc.schema / f"{uc.name}.json"


def load_feature_spec(state_dir: Path, name: str) -> FeatureSpec:
    path = feature_spec_path(state_dir, name)
    if not path.exists():
        raise LookupError(f"feature spec {name} does not exist; create it with fe.create_feature_spec")
    return FeatureSpec.load(path)


# FeatureLookup / FeatureFunction -> FeatureSpec ------------------------------------------------------------
def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _lookup_spec(lookup: Any, where: str, tables: DeltaTables) -> LookupSpec:
    table_name = lookup.table_name
    parse_uc_name(table_name, "table")
    try:
        meta = tables.meta(table_name)
    except TableNotFoundError:
        raise ValueError(f"{where}.table_name: feature table {table_name} does not exist") from None
    columns = tables.schema(table_name).names
    keys = _as_list(lookup.lookup_key)
    primary_keys = meta.entity_keys
    if len(keys) != len(primary_keys):
        raise ValueError(
            f"{where}.lookup_key {keys} must name one column per primary key {primary_keys} of {table_name}"
        )
    non_key = [c for c in columns if c not in meta.key_columns]
    features = _as_list(lookup.feature_names) or non_key
    unknown = [f for f in features if f not in non_key]
    if unknown:
        raise ValueError(
            f"{where}.feature_names {unknown} are not feature columns of {table_name}: {non_key}"
        )
    # FeatureLookup keeps rename_outputs private (``_rename_outputs``) in 0.18; read either spelling.
    renames = getattr(lookup, "rename_outputs", None) or getattr(lookup, "_rename_outputs", None) or {}
    rename = {f: renames[f] for f in features if renames.get(f, f) != f}
    by_output = {rename.get(f, f): f for f in features}
    defaults = dict(getattr(lookup, "default_values", None) or {})
    unknown = [d for d in defaults if d not in by_output]
    if unknown:
        raise ValueError(f"{where}.default_values {unknown} name no output of this lookup: {list(by_output)}")
    window = lookup.lookback_window
    return LookupSpec(
        table_name=table_name,
        lookup_key=keys,
        feature_names=features,
        rename_outputs=rename,
        default_values={by_output[out]: value for out, value in defaults.items()},  # keyed by feature
        timestamp_lookup_key=lookup.timestamp_lookup_key,
        lookback_window_seconds=None if window is None else window.total_seconds(),
    )


def _function_spec(function: Any, where: str, functions: FunctionRegistry | None) -> FunctionSpec:
    udf_name = function.udf_name
    parse_uc_name(udf_name, "function")
    bindings = dict(function.input_bindings or {})
    if not all(isinstance(c, str) for c in bindings.values()):
        raise ValueError(f"{where}.input_bindings must map parameter names to column names, got {bindings}")
    if functions is not None:
        try:
            params = list(functions.get(udf_name).params)
        except LookupError:
            raise ValueError(f"{where}.udf_name: function {udf_name} does not exist") from None
        if sorted(params) != sorted(bindings):
            raise ValueError(
                f"{where}.input_bindings {sorted(bindings)} must bind exactly the parameters {params}"
            )
    return FunctionSpec(
        udf_name=udf_name, input_bindings=bindings, output_name=function.output_name or udf_name
    )


def feature_spec_from_features(
    features: Sequence[Any],
    exclude_columns: Sequence[str] | None,
    tables: DeltaTables,
    functions: FunctionRegistry | None = None,
) -> FeatureSpec:
    """A :class:`FeatureSpec` from real ``FeatureLookup`` / ``FeatureFunction`` objects, validated.

    ``feature_names=None`` means every non-key column; ``default_values`` (keyed by output name, as on
    Databricks) are stored keyed by feature name. With ``functions``, each function must exist.
    """
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise ValueError("features must be a list of FeatureLookup and FeatureFunction objects")
    lookups: list[LookupSpec] = []
    udfs: list[FunctionSpec] = []
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        if hasattr(feature, "table_name") and hasattr(feature, "lookup_key"):
            lookups.append(_lookup_spec(feature, where, tables))
        elif hasattr(feature, "udf_name"):
            udfs.append(_function_spec(feature, where, functions))
        else:
            raise ValueError(
                f"{where} is a {type(feature).__name__}; the local twin takes FeatureLookup and "
                "FeatureFunction objects"
            )
    outputs = [out for lk in lookups for out in lk.output_names] + [fn.output_name for fn in udfs]
    duplicates = sorted({o for o in outputs if outputs.count(o) > 1})
    if duplicates:
        raise ValueError(f"features produce the column(s) {duplicates} more than once; use rename_outputs")
    exclude = _as_list(exclude_columns)
    if not all(isinstance(c, str) for c in exclude):
        raise ValueError(f"exclude_columns must be a list of column names, got {exclude_columns!r}")
    return FeatureSpec(lookups=lookups, functions=udfs, exclude_columns=exclude)


# Online store entities -------------------------------------------------------------------------------------
def _start_seconds() -> float:
    raw = os.environ.get(START_SECONDS_ENV, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_START_SECONDS
    except ValueError:
        raise ValueError(f"{START_SECONDS_ENV} must be a number of seconds, got {raw!r}") from None
    return max(seconds, 0.0)


def _store_entity(spec: dict[str, Any]):
    """The real ``DatabricksOnlineStore`` for a stored spec: ``STARTING`` until ``available_at``."""
    from databricks.ml_features.entities.online_store import DatabricksOnlineStore

    fields = {k: v for k, v in spec.items() if k != "available_at"}
    starting = time.time() < spec.get("available_at", 0)
    state = DatabricksOnlineStore.State.STARTING if starting else DatabricksOnlineStore.State.AVAILABLE
    return DatabricksOnlineStore(**fields, state=state)


# The mixin -------------------------------------------------------------------------------------------------
class OnlinePublishingMixin:
    """``FeatureEngineeringClient``'s online methods; the host class sets ``_state_dir``, ``_tables`` and
    ``_functions``."""

    _state_dir: Path
    _tables: DeltaTables
    _functions: FunctionRegistry

    @cached_property
    def _online_store(self) -> OnlineStore:
        return OnlineStore(self._state_dir)

    # Online stores ------------------------------------------------------------------------------------------
    def create_online_store(
        self,
        *,
        name: str,
        capacity: str,
        read_replica_count: int | None = None,
        usage_policy_id: str | None = None,
    ):
        """Create a named online store; like Databricks it returns while the store is still ``STARTING``.

        It becomes ``AVAILABLE`` ``HELPERS_ONLINE_STORE_START_SECONDS`` (default 3) seconds later; poll
        ``get_online_store(name=...).state`` before publishing. Locally every store lives in ``online.db``.
        """
        from databricks.sdk.errors import AlreadyExists

        if not isinstance(name, str) or not _STORE_NAME.match(name):
            raise ValueError(
                f"name {name!r} is not a valid online store name: letters, digits, hyphens and underscores, "
                "at most 63 characters"
            )
        if capacity not in CAPACITIES:
            raise ValueError(f"capacity {capacity!r} is not valid; use one of {list(CAPACITIES)}")
        if read_replica_count is not None and not isinstance(read_replica_count, int):
            raise TypeError("'read_replica_count' value must be an integer.")
        if self.get_online_store(name=name) is not None:
            raise AlreadyExists(f"Online store with name '{name}' already exists")
        spec = {
            "name": name,
            "capacity": capacity,
            "read_replica_count": read_replica_count or 0,
            "usage_policy_id": usage_policy_id,
            "creator": getpass.getuser(),
            "creation_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "available_at": time.time() + _start_seconds(),
        }
        self._online_store.save_store(name, spec)
        return _store_entity(spec)

    def delete_online_store(self, *, name: str) -> None:
        """Delete the online store and the online tables published to it (the offline tables stay)."""
        self._online_store.delete_store(name)

    def drop_online_table(self, name: str, online_store: Any) -> None:
        """Drop one online table (``name`` is its online table name); its offline table stays."""
        self._online_store.drop(name)

    def get_online_store(self, *, name: str):
        """The online store called ``name`` with its current state, or ``None`` if there is none."""
        spec = self._online_store.get_store(name)
        return None if spec is None else _store_entity(spec)

    def publish_table(
        self,
        *,
        online_store: Any,
        source_table_name: str = None,  # type: ignore[assignment] - the real signature
        online_table_name: str = None,  # type: ignore[assignment]
        publish_mode: str = "TRIGGERED",
        filter_condition: str | None = None,
        mode: str = "merge",
        streaming: bool = False,
        checkpoint_location: str | None = None,
        trigger: dict[str, Any] = _DEFAULT_TRIGGER,  # noqa: B006 - the real default
        features: str | list[str] | None = None,
        **kwargs: Any,
    ):
        """Sync a feature table into the online store: a snapshot first, then only what changed.

        ``TRIGGERED`` (the default) copies the changes since the last publish; ``SNAPSHOT`` copies the whole
        table every time; ``CONTINUOUS`` syncs now, then keeps following the table's change data feed in the
        background (:mod:`helpers.local.continuous_sync`) until the online table is deleted.
        Databricks' preconditions hold: the store is ``AVAILABLE``, and ``TRIGGERED`` / ``CONTINUOUS`` need
        Change Data Feed on the source table.
        """
        from databricks.ml_features.entities.published_table import PublishedTable

        if source_table_name is None:
            source_table_name = kwargs.get("name")  # the real client still accepts the old argument
            if source_table_name is None:
                raise ValueError("source_table_name is required")
        parse_uc_name(source_table_name, "source_table_name")
        if mode != "merge":
            raise ValueError(f"Unsupported mode '{mode}'. 'merge' is the only supported mode.")
        if not (hasattr(online_store, "name") and hasattr(online_store, "capacity")):
            raise ValueError(
                "online_store must be a DatabricksOnlineStore (from create_online_store or "
                f"get_online_store), got {type(online_store).__name__}"
            )
        if online_table_name is None:
            raise ValueError("online_table_name is required for Databricks online store")
        parse_uc_name(online_table_name, "online_table_name")
        for argument, value in (
            ("filter_condition", filter_condition),
            ("checkpoint_location", checkpoint_location),
        ):
            if value is not None:
                raise ValueError(f"{argument} can not be set for Databricks online store")
        if trigger != _DEFAULT_TRIGGER:
            raise ValueError("trigger can not be set for Databricks online store")
        if features is not None:
            raise ValueError("features can not be set for Databricks online store")
        if streaming:
            if publish_mode not in ("TRIGGERED", "CONTINUOUS"):
                raise ValueError(f"streaming=True is not supported for publish_mode={publish_mode}")
            publish_mode = "CONTINUOUS"
        if publish_mode not in PUBLISH_MODES:
            raise ValueError(f"publish_mode {publish_mode!r} is not valid; use one of {list(PUBLISH_MODES)}")
        self._check_publish_preconditions(online_store.name, source_table_name, publish_mode)
        result = self._online_store.publish(
            source_table_name,
            online_table_name,
            self._tables,
            snapshot=publish_mode == "SNAPSHOT",
            online_store=online_store.name,
        )
        # CONTINUOUS: from now on the tailer syncs every commit of the source, as Databricks' pipeline does
        if publish_mode == "CONTINUOUS":
            continuous_sync.follow(self._online_store, source_table_name, online_table_name)
            continuous_sync.ensure_tailer(self._state_dir)
        else:
            continuous_sync.unfollow(self._online_store, online_table_name)
        log.info(
            "%s -> %s: %s publish of Delta version %s, %s row(s) written, %s online",
            source_table_name,
            online_table_name,
            result.mode,
            result.delta_version,
            result.rows_written,
            result.row_count,
        )
        pipeline_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"online-table:{online_table_name}"))
        return PublishedTable(online_table_name=online_table_name, pipeline_id=pipeline_id)

    def _check_publish_preconditions(
        self, store_name: str, source_table_name: str, publish_mode: str
    ) -> None:
        """Databricks' publish preconditions, with the SDK's error types and what to do about each."""
        from databricks.sdk.errors import InvalidParameterValue, InvalidState

        spec = self._online_store.get_store(store_name)
        if spec is None:
            raise ValueError(
                f"online_store {store_name!r} does not exist; create it with create_online_store"
            )
        state = _store_entity(spec).state
        if state.value != "AVAILABLE":
            raise InvalidState(
                f"Online store {store_name!r} is {state.value}, not AVAILABLE: wait until "
                f"fe.get_online_store(name={store_name!r}).state is AVAILABLE, then publish.",
                error_code="INVALID_STATE",
            )
        if not self._tables.exists(source_table_name):
            raise ValueError(f"source_table_name: feature table {source_table_name} does not exist")
        if publish_mode in _CDF_MODES and not self._tables.change_data_feed(source_table_name):
            raise InvalidParameterValue(
                f"Change Data Feed (CDF) must be enabled on the source table {source_table_name} for "
                f'publish_mode={publish_mode!r}. Enable it with spark.sql("ALTER TABLE {source_table_name} '
                'SET TBLPROPERTIES (delta.enableChangeDataFeed = true)"), or publish with '
                "publish_mode='SNAPSHOT'.",
                error_code="INVALID_PARAMETER_VALUE",
            )

    # Feature specs ------------------------------------------------------------------------------------------
    def create_feature_spec(
        self,
        *,
        name: str,
        features: list[Any],
        exclude_columns: list[str] | None = None,
        extra_pip_requirements: list[str] | None = None,
    ):
        """Store the lookups and functions a Feature Serving endpoint (or a training set) applies."""
        from databricks.ml_features.entities.feature_spec_info import FeatureSpecInfo

        path = feature_spec_path(self._state_dir, name)
        if path.exists():
            raise ValueError(
                f"name: feature spec {name} already exists; delete it first with delete_feature_spec"
            )
        spec = feature_spec_from_features(features, exclude_columns, self._tables, self._functions)
        spec.save(path)
        return FeatureSpecInfo(
            name=name, creator=getpass.getuser(), creation_timestamp_ms=int(time.time() * 1000)
        )

    def delete_feature_spec(self, *, name: str) -> None:
        path = feature_spec_path(self._state_dir, name)
        if not path.exists():
            raise ValueError(f"name: feature spec {name} does not exist")
        path.unlink()

    def _load_feature_spec(self, name: str) -> FeatureSpec:
        """A stored feature spec (``create_training_set(feature_spec=...)``); ValueError if unknown."""
        try:
            return load_feature_spec(self._state_dir, name)
        except LookupError as err:
            raise ValueError(f"feature_spec: {err}") from None
