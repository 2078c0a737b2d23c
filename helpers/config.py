"""One settings object for every notebook, test, server and job.

Precedence, highest first: explicit arguments (papermill parameters), environment variables
(``HELPERS_<FIELD>``), then the defaults below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

PROJECT_ROOT = Path(__file__).resolve().parent.parent
Backend = Literal["local", "databricks"]


def detect_backend() -> Backend:
    """Databricks when running on a Databricks cluster, local everywhere else."""
    return "databricks" if os.environ.get("DATABRICKS_RUNTIME_VERSION") else "local"


@dataclass(frozen=True)
class Settings:
    """Where things live and how big the demo data is."""

    backend: Backend = "local"
    catalog: str = "main"
    schema: str = "serving_demo"
    state_dir: Path = PROJECT_ROOT / ".workspace"
    n_customers: int = 2_000
    n_transactions: int = 20_000
    n_products: int = 40
    n_stores: int = 5
    seed: int = 42

    def table(self, name: str) -> str:
        """Three-level Unity Catalog name of an object in this catalog and schema."""
        return f"{self.catalog}.{self.schema}.{name}"


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
    if kind == "Backend" and value not in ("local", "databricks"):
        raise ValueError(f"setting 'backend' must be 'local' or 'databricks', got {value!r}")
    return value


def get_settings(**overrides: Any) -> Settings:
    """Settings from defaults, then ``HELPERS_*`` environment variables, then ``overrides``.

    ``None`` overrides are ignored, so a notebook can pass its parameters straight through.
    """
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown setting(s): {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {"backend": detect_backend()}
    for name in known:
        env = os.environ.get(_ENV_PREFIX + name.upper())
        if env not in (None, ""):
            values[name] = _coerce(name, env)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value)
    return replace(Settings(), **values)
