"""The local feature client against real Delta tables and a real MLflow registry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from databricks.feature_engineering import FeatureFunction, FeatureLookup
from sklearn.linear_model import LogisticRegression

from helpers import platform

T = pd.Timestamp


@pytest.fixture
def fe(state_dir: Path):
    platform.settings(state_dir=state_dir)
    return platform.feature_engineering_client()


def snapshots() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2],
            "as_of": [T("2025-01-01"), T("2025-01-08"), T("2025-01-15"), T("2025-01-01")],
            "spend": [10.0, 20.0, 30.0, 5.0],
        }
    )


def test_create_read_get_drop(fe) -> None:
    # As on Databricks the timeseries column belongs to the primary keys; it is added when left out.
    fe.create_table(name="main.s.cf", primary_keys="customer_id", timeseries_column="as_of", df=snapshots())
    table = fe.get_table(name="main.s.cf")
    assert table.primary_keys == ["customer_id", "as_of"] and table.timestamp_keys == ["as_of"]
    assert table.features == ["spend"]
    assert len(fe.read_table(name="main.s.cf")) == 4
    fe.drop_table(name="main.s.cf")
    with pytest.raises(LookupError, match="main.s.cf does not exist"):
        fe.read_table(name="main.s.cf")


def test_merge_upserts_on_primary_keys_and_adds_new_columns(fe) -> None:
    fe.create_table(name="main.s.p", primary_keys="id", df=pd.DataFrame({"id": [1, 2], "x": [1.0, 2.0]}))
    fe.write_table(name="main.s.p", df=pd.DataFrame({"id": [2, 3], "x": [20.0, 30.0], "y": ["b", "c"]}))
    rows = fe.read_table(name="main.s.p").sort_values("id").reset_index(drop=True)
    assert rows["id"].tolist() == [1, 2, 3]
    assert rows["x"].tolist() == [1.0, 20.0, 30.0]
    assert rows["y"].isna().tolist() == [True, False, False]


def test_bad_writes_are_refused_and_leave_the_table_intact(fe) -> None:
    fe.create_table(name="main.s.p", primary_keys="id", df=pd.DataFrame({"id": [1], "x": [1.0]}))
    with pytest.raises(ValueError, match="'merge' is the only supported mode"):
        fe.write_table(name="main.s.p", df=pd.DataFrame({"id": [1], "x": [2.0]}), mode="overwrite")
    with pytest.raises(ValueError, match="'x'"):
        fe.write_table(name="main.s.p", df=pd.DataFrame({"id": [1], "x": ["not a number"]}))
    with pytest.raises(ValueError, match="missing column"):
        fe.write_table(name="main.s.p", df=pd.DataFrame({"x": [2.0]}))
    with pytest.raises(ValueError, match="duplicate"):
        fe.write_table(name="main.s.p", df=pd.DataFrame({"id": [1, 1], "x": [2.0, 3.0]}))
    with pytest.raises(ValueError, match="already exists"):
        fe.create_table(name="main.s.p", primary_keys="id", df=pd.DataFrame({"id": [1], "x": [1.0]}))
    with pytest.raises(ValueError, match="schema"):
        fe.create_table(name="main.s/../p", primary_keys="id", df=pd.DataFrame({"id": [1]}))
    assert fe.read_table(name="main.s.p").to_dict("records") == [{"id": 1, "x": 1.0}]


def test_point_in_time_lookup_never_sees_the_future(fe) -> None:
    fe.create_table(
        name="main.s.cf", primary_keys=["customer_id", "as_of"], timeseries_column="as_of", df=snapshots()
    )
    labels = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 1, 2, 3],
            "ts": [
                T("2024-12-31"),
                T("2025-01-01"),
                T("2025-01-10"),
                T("2025-01-20"),
                T("2025-02-01"),
                T("2025-01-10"),
            ],
            "label": [0, 1, 0, 1, 0, 1],
        }
    )
    lookup = FeatureLookup(table_name="main.s.cf", lookup_key="customer_id", timestamp_lookup_key="ts")
    df = fe.create_training_set(df=labels, feature_lookups=[lookup], label="label").load_df()
    assert df["ts"].tolist() == labels["ts"].tolist(), "row order is kept"
    spend = df["spend"].tolist()
    assert np.isnan(spend[0]), "a label before the first snapshot finds nothing"
    assert spend[1:5] == [10.0, 20.0, 30.0, 5.0]
    assert np.isnan(spend[5]), "an unknown customer finds nothing"
    # No feature value stamped after its label's timestamp ever appears in the training set.
    as_of = snapshots().set_index(["customer_id", "spend"])["as_of"]
    for row in df.dropna(subset=["spend"]).itertuples():
        assert as_of[(row.customer_id, row.spend)] <= row.ts


def test_lookback_window_and_latest_without_timestamp(fe) -> None:
    fe.create_table(
        name="main.s.cf", primary_keys=["customer_id", "as_of"], timeseries_column="as_of", df=snapshots()
    )
    labels = pd.DataFrame({"customer_id": [1, 2], "ts": [T("2025-01-20"), T("2025-01-20")], "label": [0, 1]})
    windowed = FeatureLookup(
        table_name="main.s.cf",
        lookup_key="customer_id",
        timestamp_lookup_key="ts",
        lookback_window=timedelta(days=7),
    )
    df = fe.create_training_set(df=labels, feature_lookups=[windowed], label="label").load_df()
    assert df["spend"].iloc[0] == 30.0 and np.isnan(df["spend"].iloc[1]), (
        "customer 2's snapshot is 19 days old"
    )
    latest = FeatureLookup(table_name="main.s.cf", lookup_key="customer_id")
    df = fe.create_training_set(
        df=labels[["customer_id", "label"]], feature_lookups=[latest], label="label"
    ).load_df()
    assert df["spend"].tolist() == [30.0, 5.0]


def test_lookup_options_and_feature_functions(fe) -> None:
    fe.create_table(
        name="main.s.demand",
        primary_keys=["store_id", "product_id"],
        df=pd.DataFrame({"store_id": [1, 1, 2], "product_id": [10, 11, 10], "mult": [1.5, 0.5, 2.0]}),
    )
    platform.create_python_function(
        "main.s.times", params={"a": "DOUBLE", "b": "DOUBLE"}, returns="DOUBLE", body="return a * b"
    )
    labels = pd.DataFrame(
        {"store": ["1", "2", "9"], "product": [11, 10, 10], "units": [2.0, 3.0, 4.0], "y": [1, 0, 1]}
    )
    features = [
        FeatureLookup(
            table_name="main.s.demand",
            lookup_key=["store", "product"],
            feature_names=["mult"],
            rename_outputs={"mult": "demand_multiplier"},
            default_values={"demand_multiplier": 1.0},
        ),
        FeatureFunction(
            udf_name="main.s.times",
            input_bindings={"a": "units", "b": "demand_multiplier"},
            output_name="expected",
        ),
    ]
    ts = fe.create_training_set(df=labels, feature_lookups=features, label="y", exclude_columns=["store"])
    df = ts.load_df()
    assert "store" not in df.columns
    assert df["demand_multiplier"].tolist() == [0.5, 2.0, 1.0], (
        "string keys match int keys; unknown -> default"
    )
    assert df["expected"].tolist() == [1.0, 6.0, 4.0]


def test_bad_lookups_name_the_problem(fe) -> None:
    fe.create_table(
        name="main.s.cf", primary_keys=["customer_id", "as_of"], timeseries_column="as_of", df=snapshots()
    )
    labels = pd.DataFrame({"cid": [1], "label": [1]})
    with pytest.raises(ValueError, match="customer_id"):
        fe.create_training_set(
            df=labels,
            feature_lookups=[FeatureLookup(table_name="main.s.cf", lookup_key="customer_id")],
            label="label",
        ).load_df()
    with pytest.raises(ValueError, match="nope"):
        fe.create_training_set(
            df=labels,
            feature_lookups=[FeatureLookup(table_name="main.s.cf", lookup_key="cid", feature_names=["nope"])],
            label="label",
        )
    with pytest.raises(ValueError, match="label"):
        fe.create_training_set(df=labels, feature_lookups=[], label="target")


def test_logged_model_looks_its_features_up(fe) -> None:
    fe.create_table(
        name="main.s.cf", primary_keys=["customer_id", "as_of"], timeseries_column="as_of", df=snapshots()
    )
    labels = pd.DataFrame(
        {
            "customer_id": [1, 1, 2, 2, 1, 2],
            "ts": [T("2025-01-02")] * 3 + [T("2025-01-16")] * 3,
            "amount": [1.0, 50.0, 2.0, 40.0, 3.0, 60.0],
            "label": [0, 1, 0, 1, 0, 1],
        }
    )
    lookup = FeatureLookup(table_name="main.s.cf", lookup_key="customer_id", timestamp_lookup_key="ts")
    ts = fe.create_training_set(
        df=labels, feature_lookups=[lookup], label="label", exclude_columns=["customer_id", "ts"]
    )
    train = ts.load_df()
    model = LogisticRegression().fit(train[["amount", "spend"]], train["label"])
    info = fe.log_model(
        model=model,
        artifact_path="model",
        flavor=mlflow.sklearn,
        training_set=ts,
        registered_model_name="main.s.clf",
        infer_input_example=True,
    )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("main.s.clf", "champion", info.registered_model_version)
    uri = "models:/main.s.clf@champion"

    # Given only keys and request-time values, the registered model predicts: features come from the online
    # store (published; as on Databricks a served model has no offline fallback).
    store = fe.create_online_store(name="store", capacity="CU_1")
    fe.publish_table(
        online_store=store,
        source_table_name="main.s.cf",
        online_table_name="main.s.cf_online",
        publish_mode="SNAPSHOT",
    )
    request = pd.DataFrame({"customer_id": [1, 2], "amount": [3.0, 60.0]})
    predicted = mlflow.pyfunc.load_model(uri).predict(request)
    expected = model.predict(pd.DataFrame({"amount": [3.0, 60.0], "spend": [30.0, 5.0]}))
    assert list(predicted) == list(expected)

    scored = fe.score_batch(model_uri=uri, df=labels.drop(columns="label"))
    assert scored["spend"].tolist() == train["spend"].tolist(), (
        "score_batch joins point-in-time like training"
    )
    assert scored["prediction"].tolist() == model.predict(train[["amount", "spend"]]).tolist()
