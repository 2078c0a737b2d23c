"""Fraud check: one transaction to the fraud model's endpoint, its score as a plain-language verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from databricks.sdk import WorkspaceClient

# The values the fraud model was trained on (notebook 00's synthetic transactions).
CHANNELS = ("online", "pos", "atm")
MERCHANT_CATEGORIES = (
    "grocery", "restaurant", "fuel", "pharmacy", "apparel", "electronics", "travel", "digital_goods",
    "cash_withdrawal",
)  # fmt: skip


def transaction_record(
    customer_id: int | float | None,
    amount: float | None,
    merchant_category: str,
    hour: int | float | None,
    channel: str,
    distance_from_home_km: float | None,
) -> tuple[dict[str, Any], list[str]]:
    """The request record (the customer's key and the request-time values), and the problems found."""
    errors = []
    if customer_id is None or customer_id != int(customer_id) or customer_id < 0:
        errors.append(f"Customer id must be a whole number of at least 0 (got {customer_id}).")
    if amount is None or not amount > 0:
        errors.append(f"Amount must be above 0 (got {amount}).")
    if hour is None or hour != int(hour) or not 0 <= hour <= 23:
        errors.append(f"Hour must be a whole number from 0 to 23 (got {hour}).")
    if distance_from_home_km is None or distance_from_home_km < 0:
        errors.append(f"Distance from home must be 0 km or more (got {distance_from_home_km}).")
    if merchant_category not in MERCHANT_CATEGORIES:
        errors.append(f"Merchant category must be one of {', '.join(MERCHANT_CATEGORIES)}.")
    if channel not in CHANNELS:
        errors.append(f"Channel must be one of {', '.join(CHANNELS)}.")
    if errors:
        return {}, errors
    record = {
        "customer_id": int(customer_id),
        "amount": float(amount),
        "merchant_category": merchant_category,
        "hour": int(hour),
        "channel": channel,
        "distance_from_home_km": float(distance_from_home_km),
    }
    return record, []


@dataclass(frozen=True)
class Verdict:
    score: float
    level: str  # "fraud" | "review" | "ok"
    text: str
    served_by: str | None


def verdict(score: float, threshold: float) -> tuple[str, str]:
    """A level and a sentence for a fraud probability: block at ``threshold``, review from half of it."""
    if score >= threshold:
        return "fraud", f"Likely fraud ({score:.0%}). Hold the transaction and contact the customer."
    if score >= threshold / 2:
        return "review", f"Unusual ({score:.0%}). Let it through, but queue it for a manual review."
    return "ok", f"Looks normal ({score:.0%}). No action needed."


def score(w: WorkspaceClient, endpoint: str, record: dict[str, Any], threshold: float) -> Verdict:
    """Score one transaction; the endpoint looks up the customer's features itself."""
    answer = w.serving_endpoints.query(endpoint, dataframe_records=[record])
    predictions = answer.predictions or []
    if not predictions:
        raise RuntimeError(f"endpoint {endpoint!r} answered without a prediction")
    value = predictions[0]
    if isinstance(value, dict):  # a model that answers a record per row
        value = next(iter(value.values()))
    if isinstance(value, list):  # a classifier's predict_proba: [p(not fraud), p(fraud)]
        value = value[-1]
    probability = float(value)
    level, text = verdict(probability, threshold)
    return Verdict(probability, level, text, answer.served_model_name)
