"""Small steps on top of the feature-engineering client that the notebooks share (backend-agnostic)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from helpers import platform


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
    """The online store called ``name``, created on first use (capacity applies on Databricks)."""
    return fe.get_online_store(name=name) or fe.create_online_store(name=name, capacity=capacity)


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
