"""One settings object for every notebook, test, server and job.

Precedence, highest first: explicit arguments (papermill parameters), environment variables
(``HELPERS_<FIELD>``), the variables' defaults in ``project.yml`` at the project root (the same file the
Databricks Asset Bundle includes), then the defaults below (the demo's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = PROJECT_ROOT / "project.yml"
Backend = Literal["local", "databricks"]


def detect_backend() -> Backend:
    """Databricks when running on a Databricks cluster, local everywhere else."""
    return "databricks" if os.environ.get("DATABRICKS_RUNTIME_VERSION") else "local"


@dataclass(frozen=True)
class Settings:
    """Where things live, what they are called, which data feeds them and how big the demo data is."""

    backend: Backend = "local"
    catalog: str = "main"
    schema: str = "serving_demo"
    state_dir: Path = PROJECT_ROOT / ".workspace"
    # Names of what the notebooks create.
    model_name: str = "fraud_model"
    model_endpoint: str = "fraud-scoring"
    online_store_name: str = "serving-demo-store"
    job_name: str = "shelf_layout_optimization"
    job_endpoint: str = "shelf-layouts"
    # The scored events and their entities: the demo's, or your own (``source`` + the column mapping).
    source: str = ""  # CSV or Parquet path (relative to the project root) or a table name; "" = demo data
    entity_key: str = "customer_id"
    event_key: str = "transaction_id"
    event_timestamp: str = "ts"
    label: str = "is_fraud"
    request_columns: tuple[str, ...] = (
        "amount",
        "merchant_category",
        "hour",
        "channel",
        "distance_from_home_km",
    )
    ratio_feature: str = "amount/avg_amount_30d"  # an on-demand UDF feature "<request column>/<feature>"
    features_table: str = "customer_features"
    events_table: str = "transactions"
    # Sizes of the demo data.
    n_customers: int = 2_000
    n_transactions: int = 20_000
    n_products: int = 40
    n_stores: int = 5
    seed: int = 42

    def table(self, name: str) -> str:
        """Three-level Unity Catalog name of an object in this catalog and schema."""
        return f"{self.catalog}.{self.schema}.{name}"

    @property
    def uses_demo_data(self) -> bool:
        return not self.source

    @property
    def inference_table_prefix(self) -> str:
        """Prefix of the model endpoint's inference tables: its name with ``_`` for ``-``."""
        return self.model_endpoint.replace("-", "_")


_ENV_PREFIX = "HELPERS_"


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"setting {name!r} must be an integer, got {value!r}") from None
    if kind == "Path":
        return Path(value).expanduser().resolve()
    if kind == "tuple[str, ...]":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
            raise ValueError(f"setting {name!r} must be a list of column names, got {value!r}")
        return tuple(item.strip() for item in items if item.strip())
    if kind == "Backend" and value not in ("local", "databricks"):
        raise ValueError(f"setting 'backend' must be 'local' or 'databricks', got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"setting {name!r} must be a string, got {value!r}")
    return value


def project_settings(path: Path = PROJECT_FILE) -> dict[str, Any]:
    """The defaults of the bundle variables in ``project.yml`` that are settings (empty without the file)."""
    if not path.is_file():
        return {}
    try:
        variables = (yaml.safe_load(path.read_text()) or {}).get("variables") or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: {error}") from None
    known = {f.name for f in fields(Settings)}
    return {
        name: _coerce(name, spec["default"])
        for name, spec in variables.items()
        if name in known and isinstance(spec, dict) and "default" in spec
    }


def get_settings(**overrides: Any) -> Settings:
    """Settings from defaults, ``project.yml``, ``HELPERS_*`` environment variables, then ``overrides``.

    ``None`` overrides are ignored, so a notebook can pass its parameters straight through.
    """
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown setting(s): {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {"backend": detect_backend(), **project_settings()}
    for name in known:
        env = os.environ.get(_ENV_PREFIX + name.upper())
        if env not in (None, ""):
            values[name] = _coerce(name, env)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value)
    return replace(Settings(), **values)
