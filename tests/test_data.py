"""Synthetic demo data: deterministic, well-formed, and with signal a model can learn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from helpers import data

N_CUSTOMERS, N_TRANSACTIONS, N_PRODUCTS, N_STORES, SEED = 3_000, 20_000, 30, 4, 7


@pytest.fixture(scope="module")
def demo() -> data.DemoData:
    return data.generate_demo_data(N_CUSTOMERS, N_TRANSACTIONS, N_PRODUCTS, N_STORES, SEED)


@pytest.fixture(scope="module")
def joined(demo: data.DemoData) -> pd.DataFrame:
    """Transactions with the customer snapshot in force at ``ts`` (point-in-time join)."""
    features = demo.customer_features.sort_values("as_of")
    return pd.merge_asof(
        demo.transactions.sort_values("ts"), features, left_on="ts", right_on="as_of", by="customer_id"
    )


def _frames(demo: data.DemoData) -> dict[str, pd.DataFrame]:
    return {f.name: getattr(demo, f.name) for f in dataclasses.fields(demo)}


def test_same_seed_gives_identical_frames(demo: data.DemoData) -> None:
    again = data.generate_demo_data(N_CUSTOMERS, N_TRANSACTIONS, N_PRODUCTS, N_STORES, SEED)
    for name, frame in _frames(demo).items():
        pd.testing.assert_frame_equal(frame, getattr(again, name), obj=name)


def test_different_seed_gives_different_frames(demo: data.DemoData) -> None:
    other = data.generate_demo_data(N_CUSTOMERS, N_TRANSACTIONS, N_PRODUCTS, N_STORES, SEED + 1)
    for name, frame in _frames(demo).items():
        assert not frame.equals(getattr(other, name)), name


def test_demo_data_is_frozen(demo: data.DemoData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo.customers = demo.customers  # type: ignore[misc]


EXPECTED_DTYPES = {
    "customers": {
        "customer_id": "int64",
        "age": "int64",
        "tenure_days": "int64",
        "region": "str",
        "segment": "str",
        "promo_response": "int64",
    },
    "customer_features": {
        "customer_id": "int64",
        "as_of": "datetime64[us]",
        "age": "int64",
        "tenure_days": "int64",
        "avg_amount_30d": "float64",
        "std_amount_30d": "float64",
        "n_tx_30d": "int64",
        "share_online_30d": "float64",
        "share_night_30d": "float64",
        "chargebacks_365d": "int64",
    },
    "transactions": {
        "transaction_id": "int64",
        "customer_id": "int64",
        "ts": "datetime64[us]",
        "amount": "float64",
        "merchant_category": "str",
        "hour": "int64",
        "channel": "str",
        "distance_from_home_km": "float64",
        "is_fraud": "int64",
    },
    "products": {
        "product_id": "int64",
        "name": "str",
        "category": "str",
        "width_cm": "float64",
        "price": "float64",
        "margin": "float64",
        "base_daily_units": "float64",
    },
    "store_demand": {"store_id": "int64", "product_id": "int64", "demand_multiplier": "float64"},
}
KEYS = {
    "customers": ["customer_id"],
    "customer_features": ["customer_id", "as_of"],
    "transactions": ["transaction_id"],
    "products": ["product_id"],
    "store_demand": ["store_id", "product_id"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_DTYPES))
def test_columns_dtypes_and_unique_keys(demo: data.DemoData, name: str) -> None:
    frame = getattr(demo, name)
    # Text is "str" under pandas 3 and "object" under pandas 2 (the runtime's): both are text columns here.
    text = {c for c in frame if frame[c].dtype == object and pd.api.types.is_string_dtype(frame[c])}
    assert {c: "str" if c in text else str(t) for c, t in frame.dtypes.items()} == EXPECTED_DTYPES[name]
    assert not frame.duplicated(KEYS[name]).any()
    assert not frame.isna().any().any()


def test_shapes_and_id_ranges(demo: data.DemoData) -> None:
    assert len(demo.customers) == N_CUSTOMERS
    assert demo.customers.customer_id.tolist() == list(range(1, N_CUSTOMERS + 1))
    assert len(demo.customer_features) == N_CUSTOMERS * 4
    assert len(demo.transactions) == N_TRANSACTIONS
    assert set(demo.transactions.customer_id) <= set(demo.customers.customer_id)
    assert len(demo.products) == N_PRODUCTS
    assert len(demo.store_demand) == N_STORES * N_PRODUCTS
    assert sorted(demo.store_demand.store_id.unique()) == list(range(1, N_STORES + 1))


def test_customers_values(demo: data.DemoData) -> None:
    customers = demo.customers
    assert customers.age.between(18, 90).all()
    assert (customers.tenure_days > 0).all()
    assert set(customers.segment) == set(data.SEGMENTS)
    assert set(customers.region) == set(data.REGIONS)
    assert 0.15 <= customers.promo_response.mean() <= 0.30


def test_customer_features_are_weekly_snapshots_that_drift(demo: data.DemoData) -> None:
    features = demo.customer_features
    assert sorted(features.as_of.unique()) == list(pd.date_range("2025-01-01", periods=4, freq="7D"))
    by_customer = features.sort_values("as_of").groupby("customer_id")
    assert (by_customer.tenure_days.diff().dropna() == 7).all()
    assert (by_customer.chargebacks_365d.diff().dropna() >= 0).all()
    assert (by_customer.avg_amount_30d.nunique() > 1).mean() > 0.95
    assert features.share_online_30d.between(0, 1).all() and features.share_night_30d.between(0, 1).all()
    assert (features.avg_amount_30d > 0).all() and (features.std_amount_30d > 0).all()
    first = features[features.as_of == features.as_of.min()].set_index("customer_id")
    customers = demo.customers.set_index("customer_id")
    pd.testing.assert_series_equal(first.tenure_days, customers.tenure_days)


def test_customer_features_options() -> None:
    customers = data.generate_customers(10, seed=1)
    features = data.generate_customer_features(
        customers, n_snapshots=3, start="2024-06-01", freq_days=30, seed=1
    )
    assert sorted(features.as_of.unique()) == list(pd.date_range("2024-06-01", periods=3, freq="30D"))


def test_transactions_values(demo: data.DemoData) -> None:
    tx = demo.transactions
    assert (tx.amount > 0).all() and (tx.distance_from_home_km >= 0).all()
    assert tx.hour.between(0, 23).all() and (tx.hour == tx.ts.dt.hour).all()
    assert set(tx.channel) == set(data.CHANNELS)
    assert set(tx.merchant_category) == set(data.MERCHANT_CATEGORIES)
    assert tx.ts.is_monotonic_increasing and tx.transaction_id.is_monotonic_increasing
    assert 0.02 <= tx.is_fraud.mean() <= 0.05


def test_every_transaction_has_a_snapshot_in_force(demo: data.DemoData, joined: pd.DataFrame) -> None:
    as_of = demo.customer_features.as_of
    assert (demo.transactions.ts >= as_of.min()).all()
    assert (demo.transactions.ts < as_of.max() + pd.Timedelta(days=7)).all()
    assert joined.as_of.notna().all() and (joined.as_of <= joined.ts).all()
    # Amounts centre on the customer's average at the snapshot in force.
    assert 0.6 < (joined.amount / joined.avg_amount_30d).median() < 1.5


def _fraud_design(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = pd.DataFrame(
        {
            "log_ratio": np.log(frame.amount / frame.avg_amount_30d),
            "log_distance": np.log1p(frame.distance_from_home_km),
            "night": frame.hour.isin(data.NIGHT_HOURS).astype(float),
            "chargebacks": frame.chargebacks_365d.astype(float),
            "share_online": frame.share_online_30d,
        }
    )
    return pd.concat([numeric, pd.get_dummies(frame[["merchant_category", "channel"]], dtype=float)], axis=1)


def test_fraud_is_learnable_from_point_in_time_features(joined: pd.DataFrame) -> None:
    x, y = _fraud_design(joined), joined.is_fraud
    cut = int(len(joined) * 0.7)
    model = LogisticRegression(max_iter=2_000).fit(x.iloc[:cut], y.iloc[:cut])
    auc = roc_auc_score(y.iloc[cut:], model.predict_proba(x.iloc[cut:])[:, 1])
    assert auc > 0.75


def test_promo_response_is_learnable_from_customer_features(demo: data.DemoData) -> None:
    features = demo.customer_features
    latest = features[features.as_of == features.as_of.max()]
    frame = demo.customers.drop(columns=["age", "tenure_days"]).merge(latest, on="customer_id")
    x = pd.get_dummies(
        frame[["age", "segment", "region", "avg_amount_30d", "n_tx_30d", "share_online_30d"]], dtype=float
    ).assign(log_tenure=np.log1p(frame.tenure_days))
    y = frame.promo_response
    cut = int(len(frame) * 0.7)
    model = LogisticRegression(max_iter=5_000).fit(x.iloc[:cut], y.iloc[:cut])
    auc = roc_auc_score(y.iloc[cut:], model.predict_proba(x.iloc[cut:])[:, 1])
    assert auc > 0.65


def test_products_and_store_demand(demo: data.DemoData) -> None:
    products = demo.products
    assert products.name.is_unique
    assert products.width_cm.between(5, 40).all()
    assert ((products.margin > 0) & (products.margin < products.price)).all()
    assert (products.base_daily_units > 0).all()
    assert set(products.category) <= set(data.PRODUCT_CATEGORIES)
    demand = demo.store_demand.pivot(index="product_id", columns="store_id", values="demand_multiplier")
    assert (demand > 0).all().all()
    assert demand.corr().to_numpy()[np.triu_indices(N_STORES, 1)].max() < 0.99


def test_more_products_than_catalog_names_stay_unique() -> None:
    assert data.generate_products(500, seed=3).name.is_unique


def test_late_labels_arrive_after_the_transaction(demo: data.DemoData) -> None:
    labels = data.late_labels(demo.transactions, seed=SEED, delay_days=10)
    tx = demo.transactions
    assert labels.transaction_id.tolist() == tx.transaction_id.tolist()
    assert labels.is_fraud.tolist() == tx.is_fraud.tolist()
    delay = labels.labeled_at - tx.ts
    assert (delay >= pd.Timedelta(days=1)).all() and (delay <= pd.Timedelta(days=10)).all()


def test_generates_200k_transactions() -> None:
    customers = data.generate_customers(20_000, seed=5)
    features = data.generate_customer_features(customers, seed=5)
    tx = data.generate_transactions(customers, features, 200_000, seed=5)
    assert len(tx) == 200_000 and tx.transaction_id.is_unique


def _customers(n: int = 5) -> pd.DataFrame:
    return data.generate_customers(n, seed=1)


def _features(n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    customers = _customers(n)
    return customers, data.generate_customer_features(customers, seed=1)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: data.generate_customers(0, seed=1), "n_customers"),
        (lambda: data.generate_customers(5, seed=-1), "seed"),
        (lambda: data.generate_customers(5, seed=1.5), "seed"),
        (lambda: data.generate_customers(True, seed=1), "n_customers"),
        (lambda: data.generate_customer_features(_customers(), n_snapshots=0, seed=1), "n_snapshots"),
        (lambda: data.generate_customer_features(_customers(), freq_days=-7, seed=1), "freq_days"),
        (lambda: data.generate_customer_features(_customers(), start="soon", seed=1), "start"),
        (lambda: data.generate_customer_features(_customers(), start="2025-01-01 10:00", seed=1), "start"),
        (lambda: data.generate_customer_features(pd.DataFrame({"x": [1]}), seed=1), "customers"),
        (lambda: data.generate_customer_features(_customers().assign(segment="vip"), seed=1), "segment"),
        (lambda: data.generate_customer_features(_customers().assign(customer_id=1), seed=1), "customer_id"),
        (lambda: data.generate_transactions(*_features(), 0, seed=1), "n_transactions"),
        (lambda: data.generate_transactions(*_features(), 10, seed=None), "seed"),
        (lambda: data.generate_transactions(_customers(), "features", 10, seed=1), "customer_features"),
        (lambda: data.generate_transactions(_customers(6), _features()[1], 1, seed=1), "customer_features"),
        (lambda: data.generate_products(-3, seed=1), "n_products"),
        (lambda: data.generate_store_demand(0, data.generate_products(3, seed=1), seed=1), "n_stores"),
        (lambda: data.generate_store_demand(2, pd.DataFrame({"product_id": [1]}), seed=1), "products"),
        (lambda: data.late_labels(pd.DataFrame({"ts": []}), seed=1), "events"),
        (lambda: data.generate_demo_data(10, 100, 5, 0, seed=1), "n_stores"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(call, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        call()


def test_sales_history_is_weekly_deterministic_and_keyed(demo: data.DemoData) -> None:
    sales = data.generate_sales_history(demo.store_demand, demo.products, n_weeks=6, seed=SEED)
    again = data.generate_sales_history(demo.store_demand, demo.products, n_weeks=6, seed=SEED)
    pd.testing.assert_frame_equal(sales, again)
    assert not sales.equals(data.generate_sales_history(demo.store_demand, demo.products, 6, seed=SEED + 1))
    assert {c: str(t) for c, t in sales.dtypes.items()} == {
        "store_id": "int64",
        "product_id": "int64",
        "week_start": "datetime64[us]",
        "units_sold": "int64",
    }
    assert len(sales) == len(demo.store_demand) * 6
    assert not sales.duplicated(["store_id", "product_id", "week_start"]).any()
    assert sorted(sales.week_start.unique()) == list(pd.date_range("2024-01-01", periods=6, freq="7D"))
    assert (sales.units_sold >= 0).all()


def test_sales_history_centres_on_seven_days_of_base_demand(demo: data.DemoData) -> None:
    sales = data.generate_sales_history(demo.store_demand, demo.products, n_weeks=300, seed=SEED)
    mean = sales.groupby(["store_id", "product_id"]).units_sold.mean()
    expected = demo.store_demand.merge(demo.products, on="product_id").set_index(["store_id", "product_id"])
    expected = 7 * expected.base_daily_units * expected.demand_multiplier
    ratio = mean / expected.loc[mean.index]
    assert ratio.between(0.9, 1.1).all(), ratio.describe()
    # Weekly noise on top of Poisson: more spread than Poisson alone, as real sales have.
    dispersion = sales.groupby(["store_id", "product_id"]).units_sold.var() / mean
    assert dispersion.median() > 2


def test_sales_history_without_noise_is_poisson(demo: data.DemoData) -> None:
    sales = data.generate_sales_history(demo.store_demand, demo.products, n_weeks=300, seed=SEED, noise=0)
    grouped = sales.groupby(["store_id", "product_id"]).units_sold
    assert (grouped.var() / grouped.mean()).median() == pytest.approx(1, abs=0.15)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n_weeks": 0}, "n_weeks"),
        ({"noise": -0.1}, "noise"),
        ({"start": "2024-01-01 12:00"}, "start"),
        (
            {
                "store_demand": pd.DataFrame(
                    {"store_id": [1], "product_id": [999], "demand_multiplier": [1.0]}
                )
            },
            "product_id",
        ),
        ({"store_demand": pd.DataFrame({"store_id": [1]})}, "store_demand"),
        ({"products": pd.DataFrame({"product_id": [1]})}, "products"),
    ],
)
def test_sales_history_bad_arguments_name_the_argument(kwargs: dict, argument: str) -> None:
    products = data.generate_products(5, seed=1)
    arguments = {
        "store_demand": data.generate_store_demand(2, products, seed=1),
        "products": products,
        "n_weeks": 4,
        "seed": 1,
        **kwargs,
    }
    with pytest.raises(ValueError, match=argument):
        data.generate_sales_history(**arguments)
