"""Small steps on top of the feature-engineering client that the notebooks share (backend-agnostic)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd

from helpers import platform
from helpers.config import Settings


def table_exists(fe: Any, name: str) -> bool:
    """True when ``fe.get_table`` finds ``name``."""
    try:
        fe.get_table(name=name)
    except Exception:  # the real client raises several types for a missing table
        return False
    return True


def create_or_merge_table(
    fe: Any,
    *,
    name: str,
    df: pd.DataFrame,
    primary_keys: str | list[str],
    timeseries_column: str | None = None,
    description: str | None = None,
) -> str:
    """Create the feature table on the first run and merge ``df`` into it on later ones.

    Re-running a notebook is then safe: rows are upserted on the primary keys, never duplicated.
    Returns ``"created"`` or ``"merged"``.
    """
    frame = platform.to_backend_df(df)
    if table_exists(fe, name):
        fe.write_table(name=name, df=frame, mode="merge")
        return "merged"
    fe.create_table(
        name=name,
        primary_keys=primary_keys,
        df=frame,
        timeseries_column=timeseries_column,
        description=description,
    )
    return "created"


def get_or_create_online_store(fe: Any, name: str, capacity: str = "CU_1") -> Any:
    """The online store called ``name``, created on first use (capacity applies on Databricks).

    A new store comes back ``STARTING``: wait for it with :func:`wait_for_online_store` before publishing.
    """
    return fe.get_online_store(name=name) or fe.create_online_store(name=name, capacity=capacity)


def wait_for_online_store(
    fe: Any, name: str, timeout: timedelta = timedelta(minutes=20), max_poll_seconds: float = 10
) -> Any:
    """Poll ``fe.get_online_store(name=name).state`` until ``AVAILABLE`` (printing each new state).

    ``create_online_store`` returns while the store is starting; publishing to it fails until then.
    Raises ``TimeoutError`` after ``timeout``, ``RuntimeError`` if the store does not exist.
    """
    started, pause, last = time.monotonic(), 0.25, None
    while True:
        store = fe.get_online_store(name=name)
        if store is None:
            raise RuntimeError(f"online store {name!r} does not exist; create it with fe.create_online_store")
        state = store.state.value if store.state is not None else "STATE_UNSPECIFIED"
        if state != last:
            print(f"  {time.monotonic() - started:6.1f} s  online store {name}: {state}")
            last = state
        if state == "AVAILABLE":
            return store
        if time.monotonic() - started > timeout.total_seconds():
            raise TimeoutError(f"online store {name!r} not AVAILABLE after {timeout} (still {state})")
        time.sleep(pause)
        pause = min(pause * 2, max_poll_seconds)


def create_feature_spec_if_missing(
    fe: Any, *, name: str, features: list, exclude_columns: list[str] | None = None
) -> str:
    """Create the feature spec, or keep an existing one (an endpoint may serve it); returns the action."""
    try:
        fe.create_feature_spec(name=name, features=features, exclude_columns=exclude_columns)
    except Exception as err:  # the real client raises a generic error for an existing function
        if "already exists" not in str(err).lower():
            raise
        return "exists"
    return "created"


@dataclass(frozen=True)
class RatioFeature:
    """An on-demand feature ``numerator / denominator``: a request-time value over a looked-up one."""

    udf_name: str
    numerator: str
    denominator: str

    @property
    def output_name(self) -> str:
        return f"{self.numerator}_to_{self.denominator}"


def ratio_feature(cfg: Settings) -> RatioFeature | None:
    """The ``ratio_feature`` setting (``"<request column>/<feature>"``) parsed, or None when it is empty."""
    if not cfg.ratio_feature:
        return None
    numerator, slash, denominator = cfg.ratio_feature.partition("/")
    if not slash or not numerator.strip() or not denominator.strip():
        raise ValueError(f"ratio_feature must look like 'amount/avg_amount_30d', got {cfg.ratio_feature!r}")
    numerator = numerator.strip()
    return RatioFeature(cfg.table(f"{numerator}_ratio"), numerator, denominator.strip())


def create_ratio_function(cfg: Settings) -> str | None:
    """Register the ratio UDF in Unity Catalog (the same body locally); returns its SQL, None if unset."""
    ratio = ratio_feature(cfg)
    if ratio is None:
        return None
    return platform.create_python_function(
        ratio.udf_name,
        params={"numerator": "DOUBLE", "denominator": "DOUBLE"},
        returns="DOUBLE",
        body="return None if numerator is None or not denominator else numerator / denominator",
    )


def entity_feature_names(fe: Any, cfg: Settings) -> list[str]:
    """The feature columns of the entity feature table (its keys and timestamp excluded)."""
    table = fe.get_table(name=cfg.table(cfg.features_table))
    keys = {*table.primary_keys, *(table.timestamp_keys or [])}
    return [name for name in table.features if name not in keys]
