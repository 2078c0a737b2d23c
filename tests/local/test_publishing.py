"""Online stores, publish_table and feature specs, driven with the real FeatureLookup / FeatureFunction."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from databricks.feature_engineering import FeatureFunction, FeatureLookup
from databricks.ml_features.entities.online_store import DatabricksOnlineStore
from databricks.ml_features.entities.published_table import PublishedTable
from databricks.sdk.errors import AlreadyExists
from publishing_client import PublishingClient as Client

from helpers.local.feature_spec import FeatureSpec, FunctionSpec, LookupSpec
from helpers.local.online_store import OnlineStore
from helpers.local.publishing import feature_spec_path
from helpers.local.tables import TableMeta

CUSTOMERS = "main.test.customers"


@pytest.fixture
def client(state_dir: Path) -> Client:
    client = Client(state_dir)
    data = pa.table({"customer_id": [1, 2], "age": [30, 70], "segment": ["a", "b"]})
    client._tables.create(TableMeta(CUSTOMERS, ["customer_id"]), data, None)
    client._tables.set_properties(CUSTOMERS, {"delta.enableChangeDataFeed": "true"})
    client._functions.create("main.test.is_senior", {"age": "INT"}, "BOOLEAN", "return age >= 65")
    return client


def test_online_store_round_trip(client: Client) -> None:
    store = client.create_online_store(name="demo-store", capacity="CU_1")

    assert isinstance(store, DatabricksOnlineStore)
    assert (store.name, store.capacity, store.state) == (
        "demo-store",
        "CU_1",
        DatabricksOnlineStore.State.AVAILABLE,
    )
    assert client.get_online_store(name="demo-store").capacity == "CU_1"
    assert client.get_online_store(name="nope") is None
    with pytest.raises(AlreadyExists):
        client.create_online_store(name="demo-store", capacity="CU_1")
    with pytest.raises(ValueError, match="capacity"):
        client.create_online_store(name="other", capacity="XL")


def test_publish_table_returns_the_real_entity_and_fills_the_store(client: Client, state_dir: Path) -> None:
    store = client.create_online_store(name="demo-store", capacity="CU_1")

    published = client.publish_table(
        online_store=store, source_table_name=CUSTOMERS, online_table_name="main.test.customers_online"
    )

    assert isinstance(published, PublishedTable)
    assert published.online_table_name == "main.test.customers_online"
    assert OnlineStore(state_dir).read_latest(CUSTOMERS, [("2",)], ["segment"]) == [{"segment": "b"}]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"source_table_name": None}, "source_table_name"),
        ({"source_table_name": "main.test.nope"}, "source_table_name"),
        ({"online_table_name": None}, "online_table_name"),
        ({"online_table_name": "no_dots"}, "online_table_name"),
        ({"publish_mode": "HOURLY"}, "publish_mode"),
        ({"mode": "overwrite"}, "mode"),
        ({"filter_condition": "age > 3"}, "filter_condition"),
        ({"features": ["age"]}, "features"),
        ({"online_store": DatabricksOnlineStore(name="ghost", capacity="CU_1")}, "online_store"),
    ],
)
def test_publish_table_names_the_bad_argument(client: Client, overrides: dict, named: str) -> None:
    arguments = {
        "online_store": client.create_online_store(name="demo-store", capacity="CU_1"),
        "source_table_name": CUSTOMERS,
        "online_table_name": "main.test.customers_online",
    } | overrides
    with pytest.raises(ValueError, match=named):
        client.publish_table(**arguments)


def test_feature_spec_from_real_lookups_and_functions(client: Client, state_dir: Path) -> None:
    info = client.create_feature_spec(
        name="main.test.customer_spec",
        features=[
            FeatureLookup(
                table_name=CUSTOMERS,
                lookup_key="customer_id",
                rename_outputs={"segment": "customer_segment"},
                default_values={"customer_segment": "unknown"},
            ),
            FeatureFunction(
                udf_name="main.test.is_senior", input_bindings={"age": "age"}, output_name="senior"
            ),
        ],
        exclude_columns=["age"],
    )

    assert info.name == "main.test.customer_spec"
    saved = FeatureSpec.load(feature_spec_path(state_dir, "main.test.customer_spec"))
    assert saved == FeatureSpec(
        lookups=[
            LookupSpec(
                table_name=CUSTOMERS,
                lookup_key=["customer_id"],
                feature_names=["age", "segment"],  # feature_names=None: every non-key column
                rename_outputs={"segment": "customer_segment"},
                default_values={"segment": "unknown"},
            )
        ],
        functions=[FunctionSpec("main.test.is_senior", {"age": "age"}, "senior")],
        exclude_columns=["age"],
    )
    with pytest.raises(ValueError, match="already exists"):
        client.create_feature_spec(name="main.test.customer_spec", features=[])
    client.delete_feature_spec(name="main.test.customer_spec")
    assert not feature_spec_path(state_dir, "main.test.customer_spec").exists()


@pytest.mark.parametrize(
    ("feature", "named"),
    [
        (FeatureLookup(table_name="main.test.nope", lookup_key="customer_id"), "table_name"),
        (FeatureLookup(table_name=CUSTOMERS, lookup_key=["customer_id", "x"]), "lookup_key"),
        (
            FeatureLookup(table_name=CUSTOMERS, lookup_key="customer_id", feature_names=["height"]),
            "feature_names",
        ),
        (
            FeatureLookup(table_name=CUSTOMERS, lookup_key="customer_id", default_values={"height": 1}),
            "default_values",
        ),
        (FeatureFunction(udf_name="main.test.nope", input_bindings={"age": "age"}), "udf_name"),
        (FeatureFunction(udf_name="main.test.is_senior", input_bindings={"years": "age"}), "input_bindings"),
    ],
)
def test_feature_spec_names_the_bad_argument(client: Client, feature: object, named: str) -> None:
    with pytest.raises(ValueError, match=rf"features\[0\]\.{named}"):
        client.create_feature_spec(name="main.test.bad_spec", features=[feature])


def test_lookback_window_is_kept_in_seconds(client: Client) -> None:
    lookup = FeatureLookup(
        table_name=CUSTOMERS,
        lookup_key="customer_id",
        timestamp_lookup_key="ts",
        lookback_window=timedelta(hours=1),
    )
    client.create_feature_spec(name="main.test.windowed", features=[lookup])

    spec = client._load_feature_spec("main.test.windowed")

    assert (spec.lookups[0].timestamp_lookup_key, spec.lookups[0].lookback_window_seconds) == ("ts", 3600.0)
    with pytest.raises(ValueError, match="feature_spec"):
        client._load_feature_spec("main.test.missing")
