"""A public-shaped dataset for bring-your-own-data tests: loan applications (not the demo generator)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# How a user maps these columns (project.yml variables), with their own names for what the notebooks create.
LOAN_MAPPING = {
    "entity_key": "applicant_id",
    "event_key": "application_id",
    "event_timestamp": "applied_at",
    "label": "defaulted",
    "request_columns": "loan_amount,term_months,purpose",
    "ratio_feature": "loan_amount/annual_income",
    "features_table": "applicant_profiles",
    "events_table": "applications",
    "model_name": "default_risk",
    "model_endpoint": "default-risk",
    "catalog": "lending",
    "schema": "risk",
}


def loan_applications(n: int = 1_500, seed: int = 7) -> pd.DataFrame:
    """Credit applications shaped like public lending data: applicants apply repeatedly over a year."""
    rng = np.random.default_rng(seed)
    n_applicants = max(n // 3, 1)
    applicant = rng.integers(0, n_applicants, n)
    base_income = rng.lognormal(10.8, 0.4, n_applicants)
    base_score = rng.normal(680, 60, n_applicants)
    income = np.round(base_income[applicant] * rng.normal(1.0, 0.05, n), -2)  # as stated when applying
    score = np.clip(base_score[applicant] + rng.normal(0, 10, n), 300, 850).round()
    amount = np.round(rng.uniform(1_000, 40_000, n), -1)
    term = rng.choice([36, 60], n)
    purpose = rng.choice(["debt_consolidation", "car", "home_improvement", "medical"], n)
    risk = 2.5 * amount / income - (score - 680) / 40 + (term == 60) * 0.6 + (purpose == "medical") * 0.5
    return pd.DataFrame(
        {
            "application_id": np.arange(10_000, 10_000 + n),
            "applicant_id": applicant + 1_000,
            "applied_at": pd.Timestamp("2025-01-01")
            + pd.to_timedelta(rng.choice(365 * 86_400, n, replace=False), unit="s"),
            "loan_amount": amount,
            "term_months": term,
            "purpose": purpose,
            "annual_income": income,
            "credit_score": score,
            "open_accounts": rng.poisson(6, n),
            "defaulted": (rng.random(n) < 1 / (1 + np.exp(-(risk - 2.0)))).astype(int),
        }
    )


# A small real table no one here wrote: monthly stock prices shipped with `vega_datasets` (dev extra).
STOCKS_MAPPING = {
    "entity_key": "symbol",
    "event_key": "event_id",
    "event_timestamp": "date",
    "label": "up_next_month",
    "request_columns": "price",
    "ratio_feature": "price/avg_price_3m",
    "features_table": "symbol_features",
    "events_table": "monthly_prices",
    "model_name": "stock_direction",
    "model_endpoint": "stock-direction",
    "catalog": "markets",
    "schema": "stocks",
}


def stock_events() -> pd.DataFrame:
    """540 labelled events from vega_datasets' monthly prices of 5 symbols: string keys, "Apr 1 2000"-style
    dates, the price at the event (request time), the symbol's recent history (attributes) and whether the
    price is up a month later (the label)."""
    from vega_datasets import data

    stocks = data.stocks(parse_dates=False)  # symbol, date ("Jan 1 2000"), price
    stocks = stocks.assign(when=pd.to_datetime(stocks.date, format="%b %d %Y")).sort_values(
        ["symbol", "when"]
    )
    by_symbol = stocks.groupby("symbol").price
    events = stocks.assign(
        event_id=stocks.symbol + "-" + stocks.when.dt.strftime("%Y-%m"),
        avg_price_3m=by_symbol.transform(lambda p: p.shift(1).rolling(3).mean()).round(2),
        return_1m=by_symbol.transform(lambda p: p.pct_change()).round(4),
        up_next_month=(by_symbol.shift(-1) > stocks.price).astype(int),
    )
    events = events[events.avg_price_3m.notna() & by_symbol.shift(-1).notna()]
    return events[["symbol", "event_id", "date", "price", "avg_price_3m", "return_1m", "up_next_month"]]
