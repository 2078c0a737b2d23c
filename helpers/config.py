"""One settings object for every notebook, test, server and job.

Precedence, highest first: explicit arguments (papermill parameters), environment variables
(``HELPERS_<FIELD>``), the variables' defaults in ``helpers/project.yml`` (the same file the Databricks Asset
Bundle includes; it travels inside the package, so a job cluster that installs the wheel reads the same names
and column mapping), then the defaults below (the demo's).

The backend: ``HELPERS_BACKEND=databricks|local`` when set; otherwise Databricks on a Databricks cluster
(``DATABRICKS_RUNTIME_VERSION``) and local everywhere else. Off a cluster, Databricks needs a workspace to
talk to: ``DATABRICKS_HOST``, or a profile of the Databricks CLI config (``DATABRICKS_CONFIG_PROFILE``, else
its ``DEFAULT`` profile), as Databricks Connect and the SDK resolve it.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = Path(__file__).resolve().parent / "project.yml"  # package data: in the wheel too
Backend = Literal["local", "databricks"]
BACKENDS: tuple[Backend, ...] = ("local", "databricks")


class WorkspaceNotConfigured(RuntimeError):
    """The Databricks backend was asked for off a cluster, and no workspace host or CLI profile resolves."""


def detect_backend() -> Backend:
    """``HELPERS_BACKEND`` when set, else Databricks on a Databricks cluster and local everywhere else.

    Choosing Databricks off a cluster checks at once that a workspace resolves (:func:`workspace_target`).
    """
    choice = os.environ.get("HELPERS_BACKEND", "").strip().lower()
    if choice and choice not in BACKENDS:
        raise ValueError(f"HELPERS_BACKEND must be 'local' or 'databricks', got {choice!r}")
    on_cluster = bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))
    backend: Backend = "databricks" if choice == "databricks" or (not choice and on_cluster) else "local"
    if backend == "databricks" and not on_cluster:
        workspace_target()
    return backend


def workspace_target() -> str:
    """The workspace the Databricks backend talks to off a cluster, as the SDK and Databricks Connect find it.

    ``DATABRICKS_HOST`` wins; else the profile ``DATABRICKS_CONFIG_PROFILE`` names (``DEFAULT`` when unset)
    in the CLI config file (``DATABRICKS_CONFIG_FILE``, default ``~/.databrickscfg``), with its ``host``.
    Raises :class:`WorkspaceNotConfigured` saying what to set.
    """
    if os.environ.get("DATABRICKS_HOST"):
        return f"host {os.environ['DATABRICKS_HOST']} (DATABRICKS_HOST)"
    path = Path(os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser()
    named = os.environ.get("DATABRICKS_CONFIG_PROFILE", "")
    profile = named or "DEFAULT"
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as error:
        raise WorkspaceNotConfigured(f"{path} is not a valid Databricks config file: {error}") from None
    host = parser[profile].get("host") if parser.has_section(profile) or profile == "DEFAULT" else None
    if host:
        return f"profile {profile} of {path} (host {host})"
    what = f"profile {profile!r} (DATABRICKS_CONFIG_PROFILE)" if named else "a DEFAULT profile"
    raise WorkspaceNotConfigured(
        f"HELPERS_BACKEND=databricks, but no Databricks workspace is configured: no DATABRICKS_HOST and "
        f"{path} has no {what} with a host. Run `databricks auth login --host <workspace url> --profile "
        f"<name>` and set DATABRICKS_CONFIG_PROFILE=<name> (or set DATABRICKS_HOST and DATABRICKS_TOKEN), "
        f"or unset HELPERS_BACKEND to run on the local twin."
    )


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
    offers_model_name: str = "promo_model"
    shelf_model_name: str = "shelf_demand_model"
    offers_endpoint: str = "customer-offers"
    live_offers_endpoint: str = "customer-offers-live"
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
    # The compute of the project's jobs on Databricks (helpers.jobs.job_compute and the bundle's jobs).
    spark_version: str = "18.0.x-cpu-ml-scala2.13"  # Databricks Runtime 18 LTS ML
    node_type_id: str = "i3.xlarge"
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

# The one switch for a quick run (tests, CI, a first try): ``HELPERS_SMOKE=1`` caps these notebook
# parameters at these sizes; a value set smaller (``-p n_queries 5``) stands.
SMOKE_SIZES: dict[str, int] = {
    "n_customers": 300,
    "n_transactions": 3_000,
    "n_products": 20,
    "n_stores": 3,
    "n_queries": 20,
    "max_iter": 40,
    "challenger_max_iter": 40,
    "n_stream": 60,
    "n_freshness": 3,
}


def smoke_run() -> bool:
    """True when ``HELPERS_SMOKE`` is set to 1/true/yes: notebooks run at :data:`SMOKE_SIZES`."""
    return os.environ.get("HELPERS_SMOKE", "").strip().lower() in ("1", "true", "yes")


def smoke_sizes(values: dict[str, Any]) -> dict[str, int]:
    """The integer sizes among ``values`` that a smoke run lowers, with their smoke values."""
    return {
        name: SMOKE_SIZES[name]
        for name, value in values.items()
        if name in SMOKE_SIZES and isinstance(value, int) and value > SMOKE_SIZES[name]
    }


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
    if kind == "Backend" and value not in BACKENDS:
        raise ValueError(f"setting 'backend' must be 'local' or 'databricks', got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"setting {name!r} must be a string, got {value!r}")
    return value


def project_settings(path: Path = PROJECT_FILE) -> dict[str, Any]:
    """The defaults of the bundle variables in ``project.yml`` that are settings.

    A missing file is an error, never a silent fall back to the demo's names and column mapping.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: it names this project's tables, models, endpoints and columns. Restore it "
            "(git checkout helpers/project.yml), or reinstall the package (its wheel carries it)."
        )
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
    for name in known - {"backend"}:  # HELPERS_BACKEND: detect_backend()
        env = os.environ.get(_ENV_PREFIX + name.upper())
        if env not in (None, ""):
            values[name] = _coerce(name, env)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value)
    return replace(Settings(), **values)
