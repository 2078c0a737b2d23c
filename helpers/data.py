"""Deterministic synthetic store data with real, learnable signal.

Customers (with a promotion-response label), a weekly point-in-time customer feature table, card
transactions with a fraud label, grocery products, per-store demand and weekly sales. Every generator takes
a ``seed``: the same seed gives identical frames. Timestamps are naive UTC ``datetime64[us]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REGIONS = ("north", "south", "east", "west", "central")
SEGMENTS = ("value", "regular", "premium")
CHANNELS = ("online", "pos", "atm")
MERCHANT_CATEGORIES = (
    "grocery",
    "restaurant",
    "fuel",
    "pharmacy",
    "apparel",
    "electronics",
    "travel",
    "digital_goods",
    "cash_withdrawal",
)
CUSTOMER_FEATURE_COLUMNS = (
    "age",
    "tenure_days",
    "avg_amount_30d",
    "std_amount_30d",
    "n_tx_30d",
    "share_online_30d",
    "share_night_30d",
    "chargebacks_365d",
)
NIGHT_HOURS = (22, 23, 0, 1, 2, 3, 4, 5)

# One independent random stream per generator, so changing one table never shifts another.
_STREAMS = {
    "customers": 1,
    "features": 2,
    "transactions": 3,
    "products": 4,
    "demand": 5,
    "labels": 6,
    "sales": 7,
}
_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_DEFAULT_FREQ_DAYS = 7

_SEGMENT_TICKET = np.array([22.0, 40.0, 85.0])  # typical card payment per segment
_SEGMENT_TX_PER_MONTH = np.array([18.0, 28.0, 40.0])
_DAY_HOURS = np.arange(6, 22)
_DAY_HOUR_WEIGHTS = np.array([1, 2, 3, 3, 4, 6, 6, 4, 4, 4, 5, 6, 6, 5, 3, 2], dtype=float)

# Merchant category mix per channel (rows follow CHANNELS, columns MERCHANT_CATEGORIES).
_CATEGORY_MIX = np.array(
    [
        [0.10, 0.08, 0.00, 0.04, 0.20, 0.18, 0.15, 0.25, 0.00],
        [0.34, 0.20, 0.14, 0.08, 0.12, 0.06, 0.04, 0.02, 0.00],
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 1.00],
    ]
)
_CATEGORY_TICKET = np.array([1.0, 0.7, 1.0, 0.5, 1.3, 2.0, 2.2, 0.4, 1.5])
_CATEGORY_RISK = np.array([-0.4, -0.2, 0.0, -0.3, 0.1, 0.4, 0.0, 0.8, 0.4])
_FRAUD_INTERCEPT = -6.45
_TRAVEL = MERCHANT_CATEGORIES.index("travel")

_PRODUCT_CATALOG = {
    "bakery": [
        ("Sourdough Loaf 800g", 3.9),
        ("Whole Wheat Bread 600g", 2.6),
        ("Butter Croissants 4pk", 3.2),
        ("Rye Crispbread 250g", 2.4),
        ("Cinnamon Rolls 6pk", 4.1),
    ],
    "dairy": [
        ("Whole Milk 1L", 1.3),
        ("Greek Yogurt 500g", 2.8),
        ("Aged Cheddar 200g", 3.9),
        ("Salted Butter 250g", 2.9),
        ("Oat Drink 1L", 2.2),
    ],
    "produce": [
        ("Gala Apples 1kg", 2.9),
        ("Bananas 6pk", 1.8),
        ("Baby Spinach 200g", 2.3),
        ("Cherry Tomatoes 250g", 2.5),
        ("Carrots 1kg", 1.4),
    ],
    "snacks": [
        ("Oat Crunch 500g", 3.6),
        ("Sea Salt Crisps 150g", 2.1),
        ("Dark Chocolate 100g", 2.7),
        ("Mixed Nuts 200g", 4.5),
        ("Rice Cakes 130g", 1.9),
    ],
    "beverages": [
        ("Sparkling Water 1.5L", 0.9),
        ("Orange Juice 1L", 2.9),
        ("Cold Brew Coffee 250ml", 2.6),
        ("Green Tea 20pk", 3.1),
        ("Cola 6x330ml", 4.2),
    ],
    "pantry": [
        ("Basmati Rice 1kg", 3.4),
        ("Penne Pasta 500g", 1.6),
        ("Tomato Passata 700g", 1.9),
        ("Olive Oil 500ml", 6.5),
        ("Rolled Oats 1kg", 2.2),
    ],
    "frozen": [
        ("Garden Peas 900g", 2.4),
        ("Margherita Pizza 350g", 3.5),
        ("Vanilla Ice Cream 1L", 4.3),
        ("Fish Fingers 10pk", 3.8),
        ("Berry Mix 500g", 4.0),
    ],
}
PRODUCT_CATEGORIES = tuple(_PRODUCT_CATALOG)
_BRANDS = ("Harvest", "Nordic", "Sunny Fields", "Maple & Co", "Blue Hill", "Green Acre")
# Per category: shelf width range (cm), daily units, unit margin rate.
_CATEGORY_SHELF = {
    "bakery": ((12.0, 30.0), 14.0, 0.35),
    "dairy": ((7.0, 18.0), 22.0, 0.22),
    "produce": ((15.0, 40.0), 25.0, 0.30),
    "snacks": ((10.0, 28.0), 12.0, 0.38),
    "beverages": ((8.0, 32.0), 18.0, 0.28),
    "pantry": ((6.0, 20.0), 9.0, 0.25),
    "frozen": ((14.0, 35.0), 8.0, 0.30),
}


@dataclass(frozen=True, eq=False)
class DemoData:
    """Every demo table, generated from one seed."""

    customers: pd.DataFrame
    customer_features: pd.DataFrame
    transactions: pd.DataFrame
    products: pd.DataFrame
    store_demand: pd.DataFrame


def generate_demo_data(
    n_customers: int, n_transactions: int, n_products: int, n_stores: int, seed: int
) -> DemoData:
    """All demo tables from one seed (customer features: 4 weekly snapshots from 2025-01-01)."""
    customers = generate_customers(n_customers, seed)
    features = generate_customer_features(customers, seed=seed)
    products = generate_products(n_products, seed)
    return DemoData(
        customers=customers,
        customer_features=features,
        transactions=generate_transactions(customers, features, n_transactions, seed),
        products=products,
        store_demand=generate_store_demand(n_stores, products, seed),
    )


def generate_customers(n_customers: int, seed: int) -> pd.DataFrame:
    """Customers with demographics and ``promo_response`` (1 = responded to the last promotion).

    ``tenure_days`` is counted at the first feature snapshot.
    """
    _check_count(n_customers, "n_customers")
    rng = _rng(seed, "customers")
    age = np.clip(np.rint(rng.normal(45.0, 15.0, n_customers)), 18, 90).astype(np.int64)
    segment = rng.choice(len(SEGMENTS), n_customers, p=[0.45, 0.40, 0.15])
    region = rng.choice(len(REGIONS), n_customers, p=[0.22, 0.24, 0.18, 0.16, 0.20])
    tenure_days = np.clip(np.rint(rng.gamma(1.6, 600.0, n_customers)), 1, 7300).astype(np.int64)

    # Long-standing, younger and bigger-spending (so premium) customers answer promotions.
    logit = (
        -1.25
        + 1.0 * (np.log1p(tenure_days) - 6.6)
        - 0.045 * (age - 45)
        + 1.0 * np.log(_spend_level(age, segment) / 40.0)
        + np.array([0.2, 0.0, -0.1, 0.0, 0.1])[region]
    )
    promo = rng.random(n_customers) < _sigmoid(logit)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n_customers + 1, dtype=np.int64),
            "age": age,
            "tenure_days": tenure_days,
            "region": np.asarray(REGIONS)[region],
            "segment": np.asarray(SEGMENTS)[segment],
            "promo_response": promo.astype(np.int64),
        }
    )


def generate_customer_features(
    customers: pd.DataFrame,
    n_snapshots: int = 4,
    start: str = "2025-01-01",
    freq_days: int = 7,
    *,
    seed: int,
) -> pd.DataFrame:
    """Point-in-time customer behaviour: one row per (``customer_id``, ``as_of``) snapshot.

    Snapshots are ``freq_days`` apart from ``start`` (a date) and drift a little from one to the next.
    """
    _check_columns(customers, ("customer_id", "age", "tenure_days", "segment"), "customers")
    _check_count(n_snapshots, "n_snapshots")
    _check_count(freq_days, "freq_days")
    first = _parse_start(start)
    if not customers["customer_id"].is_unique:
        raise ValueError("customers.customer_id must be unique")
    rng = _rng(seed, "features")
    customers = customers.sort_values("customer_id")
    n, k = len(customers), n_snapshots
    age = customers["age"].to_numpy(np.int64)
    segment = _codes(customers["segment"], SEGMENTS, "customers.segment")

    # Hidden per-customer traits; only their noisy, drifting aggregates become columns.
    ticket = _spend_level(age, segment) * np.exp(rng.normal(0.0, 0.35, n))
    ticket = ticket[:, None] * np.exp(np.cumsum(rng.normal(0.0, 0.08, (n, k)), axis=1))
    volatility = rng.uniform(0.3, 0.9, n)[:, None] * np.exp(rng.normal(0.0, 0.05, (n, k)))
    activity = _SEGMENT_TX_PER_MONTH[segment] * np.exp(rng.normal(0.0, 0.4, n))
    online = np.clip(rng.beta(2.0, 5.0, n) + 0.006 * (45 - age), 0.02, 0.95)
    night = rng.beta(1.2, 14.0, n)
    risk = rng.gamma(0.5, 0.6, n)
    new_chargebacks = rng.poisson(risk[:, None] * freq_days / 365.0 * 3.0, (n, k))
    new_chargebacks[:, 0] = rng.poisson(risk)

    offsets_days = np.arange(k) * freq_days
    return pd.DataFrame(
        {
            "customer_id": np.repeat(customers["customer_id"].to_numpy(np.int64), k),
            "as_of": np.tile(first + offsets_days.astype("timedelta64[D]"), n).astype("datetime64[us]"),
            "age": np.repeat(age, k),
            "tenure_days": (customers["tenure_days"].to_numpy(np.int64)[:, None] + offsets_days).ravel(),
            "avg_amount_30d": np.round(ticket, 2).ravel(),
            "std_amount_30d": np.round(ticket * volatility, 2).ravel(),
            "n_tx_30d": rng.poisson(activity[:, None] * np.exp(rng.normal(0.0, 0.1, (n, k)))).ravel(),
            "share_online_30d": _drift_share(online, rng, k, 0.03).ravel(),
            "share_night_30d": _drift_share(night, rng, k, 0.015).ravel(),
            "chargebacks_365d": np.cumsum(new_chargebacks, axis=1).ravel().astype(np.int64),
        }
    )


def generate_transactions(
    customers: pd.DataFrame, customer_features: pd.DataFrame, n_transactions: int, seed: int
) -> pd.DataFrame:
    """Card transactions with ``is_fraud``, ordered by ``ts`` (``transaction_id`` follows that order).

    Every ``ts`` falls on or after the first snapshot and before one snapshot interval past the last, so a
    point-in-time join always finds a snapshot. Fraud follows a logistic model of the amount relative to
    ``avg_amount_30d`` in force at ``ts``, distance from home, night hours, online channel, merchant
    category and ``chargebacks_365d``, plus noise.
    """
    _check_columns(customers, ("customer_id",), "customers")
    feature_columns = ("customer_id", "as_of", *CUSTOMER_FEATURE_COLUMNS)
    _check_columns(customer_features, feature_columns, "customer_features")
    _check_count(n_transactions, "n_transactions")
    rng = _rng(seed, "transactions")
    ids, snapshots, grid = _feature_grid(customers, customer_features)
    n_snapshots = len(snapshots)
    freq_us = int(np.diff(snapshots).min()) if n_snapshots > 1 else _DEFAULT_FREQ_DAYS * _DAY_US
    span_days = int((snapshots[-1] - snapshots[0]) // _DAY_US) + freq_us // _DAY_US

    activity = grid["n_tx_30d"].mean(axis=1) + 1.0
    who = rng.choice(len(activity), n_transactions, p=activity / activity.sum())
    day_start = snapshots[0] + rng.integers(0, span_days, n_transactions) * _DAY_US
    snap = np.searchsorted(snapshots, day_start, side="right") - 1
    is_night = rng.random(n_transactions) < grid["share_night_30d"][who, snap]
    hour = np.where(
        is_night,
        rng.choice(np.asarray(NIGHT_HOURS), n_transactions),
        rng.choice(_DAY_HOURS, n_transactions, p=_DAY_HOUR_WEIGHTS / _DAY_HOUR_WEIGHTS.sum()),
    ).astype(np.int64)
    ts = day_start + hour * _HOUR_US + rng.integers(0, _HOUR_US, n_transactions)
    order = np.argsort(ts, kind="stable")
    who, snap, hour, ts, is_night = who[order], snap[order], hour[order], ts[order], is_night[order]

    is_online = rng.random(n_transactions) < grid["share_online_30d"][who, snap]
    channel = np.where(is_online, 0, np.where(rng.random(n_transactions) < 0.85, 1, 2))
    category = np.empty(n_transactions, dtype=np.int64)
    for c in range(len(CHANNELS)):
        mask = channel == c
        category[mask] = rng.choice(len(MERCHANT_CATEGORIES), int(mask.sum()), p=_CATEGORY_MIX[c])

    avg = grid["avg_amount_30d"][who, snap]
    cv = grid["std_amount_30d"][who, snap] / avg
    log_sigma = np.sqrt(np.log1p(cv**2))
    heavy_tail = np.exp(log_sigma * np.clip(rng.standard_t(4, n_transactions), -4.0, 6.0) - log_sigma**2 / 2)
    amount = np.maximum(np.round(avg * _CATEGORY_TICKET[category] * heavy_tail, 2), 0.5)

    distance_scale = np.array([25.0, 4.0, 3.0])[channel] * np.where(category == _TRAVEL, 5.0, 1.0)
    distance = np.round(distance_scale * rng.lognormal(0.0, 1.0, n_transactions), 2)

    logit = (
        _FRAUD_INTERCEPT
        + 1.4 * np.log(amount / avg)
        + 0.55 * np.log1p(distance)
        + 1.2 * is_night
        + 0.8 * is_online
        + _CATEGORY_RISK[category]
        + 0.6 * grid["chargebacks_365d"][who, snap]
        + rng.normal(0.0, 0.5, n_transactions)
    )
    is_fraud = rng.random(n_transactions) < _sigmoid(logit)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(1, n_transactions + 1, dtype=np.int64),
            "customer_id": ids[who],
            "ts": ts.astype("datetime64[us]"),
            "amount": amount,
            "merchant_category": np.asarray(MERCHANT_CATEGORIES)[category],
            "hour": hour,
            "channel": np.asarray(CHANNELS)[channel],
            "distance_from_home_km": distance,
            "is_fraud": is_fraud.astype(np.int64),
        }
    )


def late_labels(
    events: pd.DataFrame,
    seed: int,
    delay_days: int = 30,
    *,
    key: str = "transaction_id",
    timestamp: str = "ts",
    label: str = "is_fraud",
) -> pd.DataFrame:
    """When each label becomes known: ``key``, ``label`` and ``labeled_at``.

    Labels arrive between one day and ``delay_days`` days after the event (chargebacks take time).
    """
    _check_columns(events, (key, timestamp, label), "events")
    _check_count(delay_days, "delay_days")
    rng = _rng(seed, "labels")
    delay_us = rng.integers(_DAY_US, delay_days * _DAY_US + 1, len(events))
    return pd.DataFrame(
        {
            key: events[key].to_numpy(),
            label: events[label].to_numpy(np.int64),
            "labeled_at": events[timestamp].to_numpy("datetime64[us]") + delay_us.astype("timedelta64[us]"),
        }
    )


def generate_products(n_products: int, seed: int) -> pd.DataFrame:
    """Grocery products with shelf width, price, unit margin and baseline daily demand."""
    _check_count(n_products, "n_products")
    rng = _rng(seed, "products")
    items = [(cat, name, price) for cat, entries in _PRODUCT_CATALOG.items() for name, price in entries]
    combos = [(brand, *item) for brand in _BRANDS for item in items]
    picks = rng.permutation(len(combos))[np.arange(n_products) % len(combos)]
    edition = np.arange(n_products) // len(combos)
    brand, category, item, list_price = zip(*(combos[i] for i in picks), strict=True)
    names = [f"{b} {it}" + (f" v{e + 1}" if e else "") for b, it, e in zip(brand, item, edition, strict=True)]

    width_lo, width_hi = (np.array([_CATEGORY_SHELF[c][0][i] for c in category]) for i in (0, 1))
    units = np.array([_CATEGORY_SHELF[c][1] for c in category])
    margin_rate = np.array([_CATEGORY_SHELF[c][2] for c in category])
    price = np.round(np.array(list_price) * rng.lognormal(0.0, 0.15, n_products), 2)
    return pd.DataFrame(
        {
            "product_id": np.arange(1, n_products + 1, dtype=np.int64),
            "name": np.asarray(names),
            "category": np.asarray(category),
            "width_cm": np.round(rng.uniform(width_lo, width_hi), 1),
            "price": price,
            "margin": np.round(price * margin_rate * rng.uniform(0.7, 1.3, n_products), 2),
            "base_daily_units": np.round(units * rng.lognormal(0.0, 0.5, n_products), 2),
        }
    )


def generate_store_demand(n_stores: int, products: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per (``store_id``, ``product_id``): ``demand_multiplier`` on the product's base demand."""
    _check_count(n_stores, "n_stores")
    _check_columns(products, ("product_id", "category"), "products")
    rng = _rng(seed, "demand")
    category = _codes(products["category"], PRODUCT_CATEGORIES, "products.category")
    n_products = len(products)
    store_size = rng.lognormal(0.0, 0.25, n_stores)[:, None]
    taste = rng.lognormal(0.0, 0.35, (n_stores, len(PRODUCT_CATEGORIES)))[:, category]
    multiplier = store_size * taste * rng.lognormal(0.0, 0.15, (n_stores, n_products))
    return pd.DataFrame(
        {
            "store_id": np.repeat(np.arange(1, n_stores + 1, dtype=np.int64), n_products),
            "product_id": np.tile(products["product_id"].to_numpy(np.int64), n_stores),
            "demand_multiplier": np.round(multiplier, 4).ravel(),
        }
    )


def generate_sales_history(
    store_demand: pd.DataFrame,
    products: pd.DataFrame,
    n_weeks: int,
    seed: int,
    start: str = "2024-01-01",
    noise: float = 0.25,
) -> pd.DataFrame:
    """Weekly units sold per (``store_id``, ``product_id``, ``week_start``) over ``n_weeks`` from ``start``.

    Units ~ Poisson(7 × ``base_daily_units`` × ``demand_multiplier`` × weekly noise), the noise log-normal
    with mean 1 and log-scale ``noise``: a demand model can learn the expected units from the product and
    store-demand features, and no more.
    """
    _check_columns(store_demand, ("store_id", "product_id", "demand_multiplier"), "store_demand")
    _check_columns(products, ("product_id", "base_daily_units"), "products")
    _check_count(n_weeks, "n_weeks")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 2:
        raise ValueError(f"noise must be a number from 0 to 2, got {noise!r}")
    first = _parse_start(start)
    base = products.set_index("product_id")["base_daily_units"]
    unknown = sorted(set(store_demand["product_id"]) - set(base.index))
    if unknown:
        raise ValueError(f"store_demand names product_id(s) {unknown[:10]} that are not in products")
    rng = _rng(seed, "sales")
    pairs = store_demand.sort_values(["store_id", "product_id"])
    daily = base.loc[pairs["product_id"]].to_numpy(np.float64) * pairs["demand_multiplier"].to_numpy()
    expected = 7.0 * daily
    shocks = rng.lognormal(-(noise**2) / 2, noise, (len(pairs), n_weeks))
    units = rng.poisson(expected[:, None] * shocks)
    weeks = (first + (np.arange(n_weeks) * 7).astype("timedelta64[D]")).astype("datetime64[us]")
    return pd.DataFrame(
        {
            "store_id": np.repeat(pairs["store_id"].to_numpy(np.int64), n_weeks),
            "product_id": np.repeat(pairs["product_id"].to_numpy(np.int64), n_weeks),
            "week_start": np.tile(weeks, len(pairs)),
            "units_sold": units.ravel().astype(np.int64),
        }
    )


def _rng(seed: int, stream: str) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), _STREAMS[stream]])


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_columns(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}")
    if frame.empty:
        raise ValueError(f"{name} is empty")


def _parse_start(start: str) -> np.datetime64:
    try:
        stamp = pd.Timestamp(start)
    except (TypeError, ValueError):
        raise ValueError(f"start must be a date like '2025-01-01', got {start!r}") from None
    if stamp is pd.NaT or stamp.tzinfo is not None or stamp != stamp.normalize():
        raise ValueError(f"start must be a date (midnight, no time zone) like '2025-01-01', got {start!r}")
    return np.datetime64(stamp.date(), "D")


def _codes(values: pd.Series, levels: tuple[str, ...], name: str) -> np.ndarray:
    known = values.isin(levels).to_numpy()
    if not known.all():
        unknown = sorted(set(values[~known].astype(str)))
        raise ValueError(f"{name} has unknown value(s) {unknown}; expected one of {list(levels)}")
    return pd.Categorical(values, categories=list(levels)).codes.astype(np.int64)


def _spend_level(age: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Typical payment amount by segment, peaking in middle age."""
    return _SEGMENT_TICKET[segment] * np.exp(-(((age - 48) / 35.0) ** 2))


def _drift_share(base: np.ndarray, rng: np.random.Generator, k: int, step: float) -> np.ndarray:
    walk = np.cumsum(rng.normal(0.0, step, (len(base), k)), axis=1)
    return np.round(np.clip(base[:, None] + walk, 0.0, 1.0), 4)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _feature_grid(
    customers: pd.DataFrame, features: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Customer ids, snapshot times (µs since epoch) and each feature as a (customer, snapshot) matrix."""
    ordered = features.sort_values(["customer_id", "as_of"])
    as_of = ordered["as_of"].to_numpy("datetime64[us]").astype(np.int64)
    snapshots = np.unique(as_of)
    ids = np.unique(customers["customer_id"].to_numpy(np.int64))
    n, k = len(ids), len(snapshots)
    feature_ids = ordered["customer_id"].to_numpy(np.int64)
    if (
        len(ordered) != n * k
        or not (feature_ids.reshape(n, k) == ids[:, None]).all()
        or not (as_of.reshape(n, k) == snapshots[None, :]).all()
    ):
        raise ValueError("customer_features must hold one row per customer in customers and per as_of")
    if (snapshots % _DAY_US).any():
        raise ValueError("customer_features.as_of must be dates at midnight")
    grid = {c: ordered[c].to_numpy(np.float64).reshape(n, k) for c in CUSTOMER_FEATURE_COLUMNS}
    return ids, snapshots, grid
