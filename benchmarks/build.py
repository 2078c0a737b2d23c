"""Build the benchmark's data once: feature table, online store, feature spec, fraud model, endpoints."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import mlflow
import numpy as np
import pandas as pd

from benchmarks import model as model_module
from helpers import data, platform
from helpers.config import get_settings
from helpers.features import wait_for_online_store

FEATURES = list(data.CUSTOMER_FEATURE_COLUMNS)
REQUEST_COLUMNS = ["amount", "merchant_category", "hour", "channel", "distance_from_home_km"]
STORE_NAME = "bench-store"


@dataclass(frozen=True)
class Built:
    """What the load runs need: names, the frames behind random bodies and the build's own timings."""

    features: pd.DataFrame  # one row per customer: customer_id, as_of, FEATURES
    transactions: pd.DataFrame  # request rows (REQUEST_COLUMNS + customer_id) to sample bodies from
    model_columns: list[str]  # the plain model's input columns, in order
    table: str
    spec: str
    model: str
    plain_model_uri: str
    timings: dict[str, float]


def customer_features(n_customers: int, seed: int) -> pd.DataFrame:
    customers = data.generate_customers(n_customers, seed)
    return data.generate_customer_features(customers, n_snapshots=1, seed=seed)


def build(state_dir: Path, n_customers: int, seed: int, n_train: int) -> Built:
    """Create everything under ``state_dir`` (its own workspace) unless an earlier run already did."""
    from databricks.feature_engineering import FeatureLookup
    from mlflow import MlflowClient

    cfg = get_settings(catalog="bench", schema="serving", state_dir=str(state_dir), seed=seed)
    names = {"table": cfg.table("customer_features"), "spec": cfg.table("customer_spec")}
    names["model"] = cfg.table("fraud_model")
    features = customer_features(n_customers, seed)
    n_train = min(n_train, n_customers)
    train_customers = data.generate_customers(n_customers, seed).head(n_train)
    transactions = data.generate_transactions(
        train_customers, features.head(n_train), n_transactions=max(5 * n_train, 20_000), seed=seed
    )
    marker = state_dir / "built.json"
    saved = json.loads(marker.read_text()) if marker.exists() else {}
    if saved.get("recipe") == _recipe():
        print(f"reusing the data built earlier in {state_dir}")
        platform.settings(catalog=cfg.catalog, schema=cfg.schema, state_dir=str(state_dir), seed=seed)
        return Built(
            features,
            transactions,
            saved["model_columns"],
            **names,
            plain_model_uri=saved["plain_model_uri"],
            timings=saved["timings"],
        )

    if state_dir.exists():  # interrupted, or built by other code: start this dedicated workspace afresh
        shutil.rmtree(state_dir)
    platform.settings(catalog=cfg.catalog, schema=cfg.schema, state_dir=str(state_dir), seed=seed)
    fe = platform.feature_engineering_client()
    timings: dict[str, float] = {}
    print(f"writing {n_customers:,} customers' features as a Delta feature table")
    started = time.perf_counter()
    fe.create_table(
        name=names["table"],
        primary_keys=["customer_id", "as_of"],
        timeseries_column="as_of",
        df=features,
        description="benchmark customer features",
    )
    timings["delta_write_s"] = time.perf_counter() - started

    platform.spark_session().sql(
        f"ALTER TABLE {names['table']} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)"
    )
    store = fe.get_online_store(name=STORE_NAME) or fe.create_online_store(name=STORE_NAME, capacity="CU_1")
    wait_for_online_store(fe, STORE_NAME)
    started = time.perf_counter()
    fe.publish_table(
        online_store=store,
        source_table_name=names["table"],
        online_table_name=cfg.table("customer_features_online"),
    )
    timings["publish_s"] = time.perf_counter() - started
    print(f"published {n_customers:,} rows in {timings['publish_s']:.1f} s")

    lookup = FeatureLookup(table_name=names["table"], lookup_key="customer_id", feature_names=FEATURES)
    fe.create_feature_spec(name=names["spec"], features=[lookup])

    print(f"training the fraud model on {len(transactions):,} transactions")
    training_set = fe.create_training_set(
        df=transactions,
        feature_lookups=[
            FeatureLookup(
                table_name=names["table"],
                lookup_key="customer_id",
                timestamp_lookup_key="ts",
                feature_names=FEATURES,
            )
        ],
        label="is_fraud",
        exclude_columns=["transaction_id", "customer_id", "ts"],
    )
    frame = platform.to_pandas(training_set.load_df())
    x, y = frame.drop(columns="is_fraud"), frame["is_fraud"]
    scorer = model_module.FraudScorer.fit(x, y, ["merchant_category", "channel"], seed)
    cloudpickle.register_pickle_by_value(model_module)  # servers load the model without this package
    with mlflow.start_run(run_name="bench_fraud_model"):
        info = fe.log_model(
            model=scorer,
            artifact_path="model",
            flavor=mlflow.pyfunc,
            training_set=training_set,
            registered_model_name=names["model"],
            infer_input_example=True,
        )
    MlflowClient().set_registered_model_alias(names["model"], "champion", info.registered_model_version)
    with mlflow.start_run(run_name="bench_plain_model"):
        plain = mlflow.pyfunc.log_model(name="plain_model", python_model=scorer, input_example=x.head(3))
    model_columns = list(x.columns)
    marker.write_text(
        json.dumps(
            {
                "model_columns": model_columns,
                "plain_model_uri": plain.model_uri,
                "timings": timings,
                "n_customers": n_customers,
                "recipe": _recipe(),
            }
        )
    )
    return Built(
        features, transactions, model_columns, **names, plain_model_uri=plain.model_uri, timings=timings
    )


def _recipe() -> str:
    """A digest of the code that builds the data and the model: changed code, fresh build."""
    here = Path(__file__).resolve().parent
    return hashlib.sha256(b"".join((here / f).read_bytes() for f in ("build.py", "model.py"))).hexdigest()


def deploy(built: Built) -> tuple[object, str, str]:
    """Serve the feature spec and the fraud model locally; returns (client, spec URL, model URL)."""
    from mlflow import MlflowClient

    from helpers import serving

    w = platform.workspace_client()
    version = MlflowClient().get_model_version_by_alias(built.model, "champion").version
    serving.deploy_endpoint(
        w, "bench-features", [serving.served_entity(built.spec, scale_to_zero_enabled=False)]
    )
    serving.deploy_endpoint(
        w, "bench-fraud", [serving.served_entity(built.model, version, scale_to_zero_enabled=False)]
    )
    # A workspace reused from an earlier run would still log: every run turns the inference table on last.
    w.serving_endpoints.put_ai_gateway("bench-features")
    host = w.config.host.rstrip("/")
    return (
        w,
        f"{host}/serving-endpoints/bench-features/invocations",
        f"{host}/serving-endpoints/bench-fraud/invocations",
    )


def score_batch_rate(built: Built, n_rows: int, seed: int) -> tuple[float, float]:
    """Rows/s and seconds of ``fe.score_batch`` on ``n_rows`` request rows with random customers.

    Timed after a warm-up call on 1,000 rows, so what only the first call in a process pays (imports,
    MLflow's requirement check) does not depend on what ran earlier in the same process.
    """
    fe = platform.feature_engineering_client()
    rng = np.random.default_rng(seed)
    rows = built.transactions.sample(n_rows, replace=True, random_state=seed)[REQUEST_COLUMNS + ["ts"]]
    ids = built.features["customer_id"].to_numpy()
    frame = rows.reset_index(drop=True).assign(customer_id=rng.choice(ids, n_rows))
    uri = f"models:/{built.model}@champion"
    fe.score_batch(model_uri=uri, df=frame.head(1_000))  # once per process: imports, MLflow's checks
    started = time.perf_counter()
    scored = fe.score_batch(model_uri=uri, df=frame)
    seconds = time.perf_counter() - started
    if len(scored) != n_rows or scored["prediction"].isna().any():
        raise RuntimeError(f"score_batch returned {len(scored)} rows for {n_rows} (or missing predictions)")
    return n_rows / seconds, seconds
