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
