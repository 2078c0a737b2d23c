"""Unity Catalog three-level names, validated before they touch a path; the names the notebooks create."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helpers.config import Settings

_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class UCName:
    """``catalog.schema.name`` with every part checked."""

    catalog: str
    schema: str
    name: str

    @property
    def full(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.name}"

    def __str__(self) -> str:
        return self.full


def parse_uc_name(full_name: object, what: str = "table") -> UCName:
    """Split and validate a ``catalog.schema.name`` string; raise ``ValueError`` naming the bad part."""
    if not isinstance(full_name, str):
        raise ValueError(
            f"{what} name must be a string 'catalog.schema.name', got {type(full_name).__name__}"
        )
    parts = full_name.split(".")
    if len(parts) != 3:
        raise ValueError(f"{what} name {full_name!r} must have three parts: 'catalog.schema.name'")
    for label, part in zip(("catalog", "schema", what), parts):
        if not _PART.match(part):
            raise ValueError(
                f"{label} {part!r} in {what} name {full_name!r} is not valid: use letters, digits and "
                "underscores, starting with a letter or underscore (at most 128 characters)"
            )
    return UCName(*parts)


def validate_identifier(value: object, what: str) -> str:
    """Validate one simple identifier (an endpoint or column name, for instance)."""
    if not isinstance(value, str) or not _PART.match(value):
        raise ValueError(
            f"{what} {value!r} is not valid: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 128 characters)"
        )
    return value


# The names the notebooks create -------------------------------------------------------------------------
_KINDS = (
    "endpoint",
    "job",
    "feature spec",
    "online store",
    "online table",
    "monitor",
    "table",
    "plain table",
    "model",
)


def _kind(kind: str) -> Any:
    assert kind in _KINDS, kind
    return field(metadata={"kind": kind})


@dataclass(frozen=True)
class ProjectNames:
    """Every name the notebooks give what they create, derived from the settings.

    The one registry of them: the notebooks name things from the settings the same way, teardown deletes
    what is listed here, and ``tests/test_names.py`` checks that every name the notebooks spell is here.
    Tables, specs and models are full Unity Catalog names.
    """

    offers_endpoint: str = _kind("endpoint")
    model_endpoint: str = _kind("endpoint")
    request_endpoint: str = _kind("endpoint")
    job_endpoint: str = _kind("endpoint")
    live_offers_endpoint: str = _kind("endpoint")
    precomputed_endpoint: str = _kind("endpoint")
    job: str = _kind("job")
    scoring_job: str = _kind("job")
    offers_spec: str = _kind("feature spec")
    live_offers_spec: str = _kind("feature spec")
    shelf_spec: str = _kind("feature spec")
    precomputed_spec: str = _kind("feature spec")
    online_store: str = _kind("online store")
    features_online_table: str = _kind("online table")
    propensity_online_table: str = _kind("online table")
    live_offers_online_table: str = _kind("online table")
    precomputed_online_table: str = _kind("online table")
    features_table: str = _kind("table")
    customers_table: str = _kind("table")
    events_table: str = _kind("table")
    products_table: str = _kind("table")
    store_demand_table: str = _kind("table")
    propensity_table: str = _kind("table")
    live_offers_table: str = _kind("table")
    shelf_history_table: str = _kind("table")
    shelf_layouts_table: str = _kind("table")
    shelf_results_table: str = _kind("table")
    precomputed_table: str = _kind("table")
    monitor: str = _kind("monitor")  # the data-profiling monitor, named by the table it watches
    payload_table: str = _kind("plain table")  # the inference table: no primary key, not a feature table
    inference_log_table: str = _kind("plain table")  # notebook 07: one row per scored record, monitored
    baseline_table: str = _kind("plain table")  # notebook 07: the monitor's baseline
    profile_metrics_table: str = _kind("plain table")  # the monitor's metric tables
    drift_metrics_table: str = _kind("plain table")
    model: str = _kind("model")
    promo_model: str = _kind("model")
    request_model: str = _kind("model")
    shelf_model: str = _kind("model")

    @classmethod
    def of(cls, cfg: Settings) -> ProjectNames:
        table = cfg.table
        return cls(
            offers_endpoint=cfg.offers_endpoint,
            live_offers_endpoint=cfg.live_offers_endpoint,
            model_endpoint=cfg.model_endpoint,
            request_endpoint=f"{cfg.model_endpoint}-request",
            job_endpoint=cfg.job_endpoint,
            precomputed_endpoint=f"{cfg.model_endpoint}-precomputed",
            job=cfg.job_name,
            scoring_job=f"{cfg.model_name}_on_request",
            offers_spec=table("customer_offers_spec"),
            live_offers_spec=table("customer_live_offer_spec"),
            shelf_spec=table("shelf_layout_spec"),
            precomputed_spec=table(f"{cfg.model_name}_precomputed_spec"),
            online_store=cfg.online_store_name,
            features_online_table=table(f"{cfg.features_table}_online"),
            propensity_online_table=table("customer_propensity_online"),
            live_offers_online_table=table("customer_live_offer_online"),
            precomputed_online_table=table(f"{cfg.model_name}_precomputed_online"),
            features_table=table(cfg.features_table),
            customers_table=table("customers"),
            events_table=table(cfg.events_table),
            products_table=table("products"),
            store_demand_table=table("store_demand"),
            propensity_table=table("customer_propensity"),
            live_offers_table=table("customer_live_offer"),
            shelf_history_table=table("shelf_sales_history"),
            shelf_layouts_table=table("shelf_layouts"),
            shelf_results_table=table("shelf_layout_results"),
            precomputed_table=table(f"{cfg.model_name}_precomputed"),
            monitor=table(f"{cfg.inference_table_prefix}_inference_log"),
            payload_table=table(f"{cfg.inference_table_prefix}_payload"),
            inference_log_table=table(f"{cfg.inference_table_prefix}_inference_log"),
            baseline_table=table(f"{cfg.inference_table_prefix}_baseline"),
            profile_metrics_table=table(f"{cfg.inference_table_prefix}_inference_log_profile_metrics"),
            drift_metrics_table=table(f"{cfg.inference_table_prefix}_inference_log_drift_metrics"),
            model=table(cfg.model_name),
            promo_model=table(cfg.offers_model_name),
            request_model=table(f"{cfg.model_name}_request"),
            shelf_model=table(cfg.shelf_model_name),
        )

    def of_kind(self, kind: str) -> tuple[str, ...]:
        """The names of one kind (``"endpoint"``, ``"table"``, ...), in declaration order."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {list(_KINDS)}, got {kind!r}")
        return tuple(getattr(self, f.name) for f in fields(self) if f.metadata["kind"] == kind)
