"""The twin is strict where Databricks is strict: each rule of docs/rules.md, held by a test here."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from databricks.feature_engineering import FeatureLookup
from databricks.ml_features.entities.online_store import DatabricksOnlineStore
from databricks.sdk.errors import InvalidParameterValue, InvalidState
from sklearn.linear_model import LinearRegression

from helpers import platform
from helpers.features import wait_for_online_store
from helpers.local.online_store import OnlineStore, TableNotPublishedError
from helpers.local.server.inference_tables import PayloadEvent, PayloadLogger
from helpers.local.tables import DeltaTables, NotAFeatureTableError

TABLE = "main.s.spend"
ENABLE_CDF = f"ALTER TABLE {TABLE} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)"


@pytest.fixture
def fe(state_dir: Path):
    platform.settings(state_dir=state_dir)
    client = platform.feature_engineering_client()
    client.create_table(
        name=TABLE,
        primary_keys="customer_id",
        df=pd.DataFrame({"customer_id": [1, 2], "spend": [10.0, 20.0]}),
    )
    return client


@pytest.fixture
def spark(fe):
    return platform.spark_session()


# Change Data Feed ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("publish_mode", ["TRIGGERED", "CONTINUOUS"])
def test_publish_needs_the_change_data_feed_and_says_how_to_turn_it_on(fe, publish_mode: str) -> None:
    store = fe.create_online_store(name="store", capacity="CU_1")
    with pytest.raises(
        InvalidParameterValue, match=r"Change Data Feed.*ALTER TABLE main\.s\.spend SET TBLPROP"
    ):
        fe.publish_table(
            online_store=store,
            source_table_name=TABLE,
            online_table_name=f"{TABLE}_online",
            publish_mode=publish_mode,
        )


def test_a_snapshot_publish_needs_no_change_data_feed(fe) -> None:
    store = fe.create_online_store(name="store", capacity="CU_1")
    fe.publish_table(
        online_store=store,
        source_table_name=TABLE,
        online_table_name=f"{TABLE}_online",
        publish_mode="SNAPSHOT",
    )
    assert OnlineStore(platform.current_settings().state_dir).read_latest(TABLE, [(2,)], ["spend"]) == [
        {"spend": 20.0}
    ]


def test_alter_table_turns_the_feed_on_and_later_publishes_are_incremental(
    fe, spark, state_dir: Path
) -> None:
    tables = DeltaTables(state_dir)
    assert not tables.change_data_feed(TABLE)  # create_table does not turn it on, as on Databricks
    spark.sql(ENABLE_CDF)
    version = tables.version(TABLE)
    spark.sql(ENABLE_CDF)  # again: no new commit
    assert tables.change_data_feed(TABLE) and tables.version(TABLE) == version

    store = OnlineStore(state_dir)
    assert store.publish(TABLE, f"{TABLE}_online", tables).mode == "snapshot"
    fe.write_table(name=TABLE, df=pd.DataFrame({"customer_id": [2, 3], "spend": [25.0, 30.0]}))
    result = store.publish(TABLE, f"{TABLE}_online", tables)
    assert (result.mode, result.rows_written) == ("incremental", 2)
    assert store.read_latest(TABLE, [(2,), (3,)], ["spend"]) == [{"spend": 25.0}, {"spend": 30.0}]


def test_the_feed_turned_on_after_a_publish_keeps_the_next_one_incremental(
    fe, spark, state_dir: Path
) -> None:
    tables, store = DeltaTables(state_dir), OnlineStore(state_dir)
    store.publish(TABLE, f"{TABLE}_online", tables, snapshot=True)
    spark.sql(ENABLE_CDF)
    fe.write_table(name=TABLE, df=pd.DataFrame({"customer_id": [1], "spend": [11.0]}))
    assert store.publish(TABLE, f"{TABLE}_online", tables).mode == "incremental"
    assert store.read_latest(TABLE, [(1,)], ["spend"]) == [{"spend": 11.0}]


def test_the_local_spark_refuses_what_it_cannot_run(spark) -> None:
    with pytest.raises(NotImplementedError, match="local spark runs only ALTER TABLE"):
        spark.sql(f"SELECT * FROM {TABLE}")
    with pytest.raises(ValueError, match="not supported locally"):
        spark.sql(f"ALTER TABLE {TABLE} SET TBLPROPERTIES (delta.appendOnly = true)")


# Online store states ------------------------------------------------------------------------------------
def test_a_new_online_store_is_starting_and_publishing_to_it_fails_until_it_is_available(
    fe, spark, monkeypatch: pytest.MonkeyPatch
) -> None:
    spark.sql(ENABLE_CDF)
    monkeypatch.setenv("HELPERS_ONLINE_STORE_START_SECONDS", "3600")
    store = fe.create_online_store(name="slow", capacity="CU_1")
    assert store.state == DatabricksOnlineStore.State.STARTING
    assert fe.get_online_store(name="slow").state == DatabricksOnlineStore.State.STARTING
    with pytest.raises(InvalidState, match=r"'slow' is STARTING.*wait until fe.get_online_store"):
        fe.publish_table(online_store=store, source_table_name=TABLE, online_table_name=f"{TABLE}_online")

    monkeypatch.setenv("HELPERS_ONLINE_STORE_START_SECONDS", "0.2")
    fe.create_online_store(name="quick", capacity="CU_1")
    ready = wait_for_online_store(fe, "quick")
    assert ready.state == DatabricksOnlineStore.State.AVAILABLE
    fe.publish_table(online_store=ready, source_table_name=TABLE, online_table_name=f"{TABLE}_online")


# Lookups only from published tables --------------------------------------------------------------------
def test_a_served_model_does_not_fall_back_to_an_unpublished_table(fe) -> None:
    labels = pd.DataFrame({"customer_id": [1, 2], "y": [1.0, 2.0]})
    training_set = fe.create_training_set(
        df=labels,
        feature_lookups=[FeatureLookup(table_name=TABLE, lookup_key="customer_id")],
        label="y",
        exclude_columns=["customer_id"],
    )
    frame = training_set.load_df()
    with mlflow.start_run():
        info = fe.log_model(
            model=LinearRegression().fit(frame[["spend"]], frame["y"]),
            artifact_path="model",
            flavor=mlflow.sklearn,
            training_set=training_set,
        )
    served = mlflow.pyfunc.load_model(info.model_uri)
    with pytest.raises(TableNotPublishedError, match=r"main\.s\.spend is not published.*fe\.publish_table"):
        served.predict(pd.DataFrame({"customer_id": [1]}))
    scored = fe.score_batch(model_uri=info.model_uri, df=pd.DataFrame({"customer_id": [1, 2]}))
    assert scored["prediction"].round(6).tolist() == [1.0, 2.0]  # offline batch scoring still joins offline
    with pytest.raises(ValueError, match=r"model input is missing column\(s\) \['spend'\]"):
        served.unwrap_python_model().predict_features(pd.DataFrame({"other": [1.0]}))


# What is and is not a feature table --------------------------------------------------------------------
def test_the_payload_table_is_a_plain_table_read_with_spark_not_with_fe(fe, spark, state_dir: Path) -> None:
    payload = "main.s.ep_payload"
    logger = PayloadLogger(state_dir, flush_seconds=3600)
    event = PayloadEvent(1, 200, 3, b'{"inputs": [1]}', b'{"predictions": [0]}', None, None, "me", "r1")
    logger.log(payload, event)
    logger.close()

    with pytest.raises(NotAFeatureTableError, match="no primary key constraint.*spark.table"):
        fe.read_table(name=payload)
    with pytest.raises(ValueError, match="not a feature table. Use spark API"):
        fe.drop_table(name=payload)
    rows = spark.table(payload).toPandas()
    assert rows["databricks_request_id"].tolist() == ["r1"] and rows["status_code"].tolist() == [200]
    spark.sql(f"DROP TABLE {payload}")
    spark.sql(f"DROP TABLE IF EXISTS {payload}")
    assert not DeltaTables(state_dir).is_delta(payload)


def test_save_as_table_refuses_to_replace_a_table_or_its_columns_unless_told(spark, state_dir: Path) -> None:
    """Spark's default save mode is ``error``; a Delta overwrite keeps the table (and its id) and needs
    ``overwriteSchema`` to change its columns, as on Databricks."""
    from helpers.local.spark import SchemaMismatchError, TableAlreadyExistsError

    log = "main.s.inference_log"
    rows = pd.DataFrame({"amount": [1.0, 2.0], "label": [1, None]})
    spark.createDataFrame(rows).write.saveAsTable(log)
    table_id = DeltaTables(state_dir).any_delta(log).metadata().id
    with pytest.raises(TableAlreadyExistsError, match=r"TABLE_OR_VIEW_ALREADY_EXISTS.*mode\(\"overwrite\"\)"):
        spark.createDataFrame(rows).write.saveAsTable(log)
    spark.createDataFrame(rows.head(1)).write.mode("overwrite").saveAsTable(log)
    assert spark.table(log).count() == 1
    wider = rows.assign(score=[0.1, 0.9])
    with pytest.raises(SchemaMismatchError, match="overwriteSchema"):
        spark.createDataFrame(wider).write.mode("overwrite").saveAsTable(log)
    spark.createDataFrame(wider).write.mode("overwrite").option("overwriteSchema", "true").saveAsTable(log)
    assert spark.table(log).columns == ["amount", "label", "score"]
    assert DeltaTables(state_dir).any_delta(log).metadata().id == table_id  # the monitor keeps its table
    assert spark.table(log).toPandas()["label"].isna().tolist() == [False, True]
    with pytest.raises(NotImplementedError, match="mode in"):
        spark.createDataFrame(rows).write.mode("append")
