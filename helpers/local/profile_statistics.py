"""The statistics of a data-profiling monitor's metric tables, each written out by its formula.

Drift between two samples (numeric: Kolmogorov-Smirnov, Wasserstein, population stability index;
categorical: chi-squared, Jensen-Shannon, total variation, L-infinity) and model quality (classification,
regression). ``helpers.local.data_profiling`` applies them per window, model id and slice; the tests check
each against scipy / scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

PSI_BINS = 10  # equal-frequency bins of the comparison window
_EPSILON = 1e-4  # floor for an empty PSI bin, so the index stays finite


def ks_test(current: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov: the largest gap between the two empirical CDFs, and its p-value."""
    return _struct(stats.ks_2samp(current, reference))


def wasserstein(current: np.ndarray, reference: np.ndarray) -> float:
    """Earth mover's distance between the two empirical distributions: the area between their CDFs."""
    points = np.sort(np.concatenate([current, reference]))
    gaps = np.diff(points)
    cdf_current = np.searchsorted(np.sort(current), points[:-1], side="right") / len(current)
    cdf_reference = np.searchsorted(np.sort(reference), points[:-1], side="right") / len(reference)
    return float(np.sum(np.abs(cdf_current - cdf_reference) * gaps))


def population_stability_index(current: np.ndarray, reference: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI = sum over bins of (p - q) * ln(p / q), bins at the reference's quantiles, empty bins floored."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant reference: one bin holding it, one for everything else
        edges = np.array([edges[0], edges[0]])
    inner = edges[1:-1]
    p = np.bincount(np.searchsorted(inner, current, side="right"), minlength=len(inner) + 1) / len(current)
    q = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(inner) + 1) / len(
        reference
    )
    p, q = np.clip(p, _EPSILON, None), np.clip(q, _EPSILON, None)
    return float(np.sum((p - q) * np.log(p / q)))


def categorical_drift(current: dict[str, int], reference: dict[str, int]) -> dict[str, Any]:
    """Chi-squared homogeneity test, Jensen-Shannon distance (base 2), total variation and L-infinity.

    ``current`` and ``reference`` count each category; a category missing from one counts 0 there.
    """
    categories = sorted(set(current) | set(reference))
    a = np.array([current.get(c, 0) for c in categories], float)
    b = np.array([reference.get(c, 0) for c in categories], float)
    p, q = a / a.sum(), b / b.sum()
    m = (p + q) / 2
    js = np.sqrt(max(0.0, (_kl2(p, m) + _kl2(q, m)) / 2))
    return {
        "chi_squared_test": chi_squared(a, b),
        "js_distance": float(js),
        "tv_distance": float(np.abs(p - q).sum() / 2),
        "l_infinity_distance": float(np.abs(p - q).max()),
    }


def chi_squared(a: np.ndarray, b: np.ndarray) -> dict[str, float] | None:
    """Pearson's chi-squared test of homogeneity on the 2 x k table of counts (no continuity correction)."""
    table = np.vstack([a, b])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return None
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return {"statistic": statistic, "pvalue": float(stats.chi2.sf(statistic, dof))}


def _kl2(p: np.ndarray, m: np.ndarray) -> float:
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log2(p[nonzero] / m[nonzero])))


def _struct(result: Any) -> dict[str, float]:
    return {"statistic": float(result.statistic), "pvalue": float(result.pvalue)}


def classification_quality(predicted: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """Accuracy, confusion matrix and one-vs-all / macro / weighted precision, recall and F1.

    ``predicted`` and ``actual`` hold the classes as the metric tables write them (``texts``).
    """
    classes = sorted(set(predicted) | set(actual))
    precision, recall, f1, support = {}, {}, {}, {}
    for c in classes:
        tp = float(np.sum((predicted == c) & (actual == c)))
        p_den, r_den = float(np.sum(predicted == c)), float(np.sum(actual == c))
        precision[c] = tp / p_den if p_den else 0.0
        recall[c] = tp / r_den if r_den else 0.0
        both = precision[c] + recall[c]
        f1[c] = 2 * precision[c] * recall[c] / both if both else 0.0
        support[c] = r_den
    total = sum(support.values())

    def averaged(per_class: dict[str, float]) -> dict[str, Any]:
        weighted = sum(per_class[c] * support[c] for c in classes) / total if total else 0.0
        return {
            "one_vs_all": per_class,
            "macro": float(np.mean(list(per_class.values()))),
            "weighted": weighted,
        }

    pairs, counts = np.unique(np.stack([predicted, actual]).astype(str), axis=1, return_counts=True)
    confusion = [
        {"prediction": p, "label": a, "count": int(n)} for (p, a), n in zip(pairs.T, counts, strict=True)
    ]
    return {
        "accuracy_score": float(np.mean(predicted == actual)),
        "confusion_matrix": confusion,
        "precision": averaged(precision),
        "recall": averaged(recall),
        "f1_score": averaged(f1),
    }


def regression_quality(y_hat: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Mean squared, root mean squared, mean absolute and mean absolute percentage error; R squared."""
    error = y_hat - y
    mse = float(np.mean(error**2))
    total = float(np.sum((y - y.mean()) ** 2))
    nonzero = y != 0
    return {
        "mean_squared_error": mse,
        "root_mean_squared_error": float(np.sqrt(mse)),
        "mean_average_error": float(np.mean(np.abs(error))),
        "mean_absolute_percentage_error": float(np.mean(np.abs(error[nonzero] / y[nonzero])))
        if nonzero.any()
        else None,
        "r2_score": float(1 - np.sum(error**2) / total) if total else None,
    }
