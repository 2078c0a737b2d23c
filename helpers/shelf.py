"""Shelf layout optimization: which products get how many facings on a shelf, as a mixed-integer program.

The model (solved with ``scipy.optimize.milp``, i.e. HiGHS):

* **Facings.** Binary ``x[i, k]`` = product ``i`` has at least ``k`` facings (``k = 1..max_facings``),
  with ``x[i, k] <= x[i, k-1]``. The facings take ``width_cm × facings`` of the shelf; the total must fit.
* **Demand grows with space, with diminishing returns.** With ``f`` facings, weekly demand is
  ``expected_units × shock × f ** space_elasticity``: each extra facing adds less than the one before.
* **Stock on the shelf.** Each facing holds ``units_per_facing`` units per week (refilled overnight); units
  beyond that need daytime restocking, and the shelf has a weekly restocking budget. Sales per scenario
  are capped by demand and by shelf stock plus restocking.
* **Scenarios and risk.** Demand shocks (store-wide, per category, per product) give ``n_scenarios``
  possible weeks; with one scenario there is no shock. The objective blends the mean weekly margin and
  its CVaR (the mean of the worst ``cvar_alpha`` share of weeks), so more scenarios give a layout that holds
  up in bad weeks — and a bigger program: the solve time grows with ``n_scenarios``.
* **Assortment.** Every category among the candidates gets at least one facing, when the shelf can fit
  one product of each.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

SHELF_LENGTH_RANGE_CM = (50.0, 2000.0)
MAX_FACINGS_RANGE = (1, 10)
N_SCENARIOS_RANGE = (1, 5000)
_RUN_ID = re.compile(r"^[\w.\-]{1,64}$")

LAYOUT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("position", pa.int64()),
        ("store_id", pa.int64()),
        ("product_id", pa.int64()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("facings", pa.int64()),
        ("unit_width_cm", pa.float64()),
        ("width_cm", pa.float64()),
        ("x_start_cm", pa.float64()),
        ("expected_units", pa.float64()),
        ("expected_margin", pa.float64()),
        ("fill_rate", pa.float64()),
    ]
)
RESULT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("store_id", pa.int64()),
        ("shelf_length_cm", pa.float64()),
        ("used_width_cm", pa.float64()),
        ("n_positions", pa.int64()),
        ("n_facings", pa.int64()),
        ("expected_weekly_units", pa.float64()),
        ("expected_weekly_margin", pa.float64()),
        ("cvar_weekly_margin", pa.float64()),
        ("n_scenarios", pa.int64()),
        ("solver_status", pa.string()),
        ("solve_seconds", pa.float64()),
        ("layout_json", pa.string()),
        ("completed_at", pa.timestamp("us", tz="UTC")),  # Spark's TimestampType
    ]
)
LAYOUT_KEYS = ["run_id", "position"]
RESULT_KEYS = ["run_id"]


# The request ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShelfRequest:
    """A validated optimization request (job parameters arrive as strings)."""

    run_id: str
    store_id: int
    shelf_length_cm: float
    candidate_products: tuple[int, ...] | None  # None: every product
    max_facings: int
    n_scenarios: int
    seed: int


def parse_request(parameters: Mapping[str, str]) -> ShelfRequest:
    """Validate job parameters; a ValueError names the bad parameter, its value and what is allowed."""

    def text(name: str) -> str:
        value = parameters.get(name)
        if value is None:
            raise ValueError(f"job parameter {name!r} is missing")
        return str(value).strip()

    def integer(name: str, low: int, high: int) -> int:
        raw = text(name)
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"job parameter {name!r} must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"job parameter {name!r} must be between {low} and {high}, got {raw!r}")
        return value

    run_id = text("run_id")
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"job parameter 'run_id' must be 1-64 letters, digits, '_', '-' or '.', got {run_id!r}"
        )
    raw_length = text("shelf_length_cm")
    try:
        length = float(raw_length)
    except ValueError:
        length = math.nan
    low, high = SHELF_LENGTH_RANGE_CM
    if not low <= length <= high:  # also refuses NaN and text
        raise ValueError(
            f"job parameter 'shelf_length_cm' must be a length in cm between {low:g} and {high:g}, "
            f"got {raw_length!r}"
        )
    return ShelfRequest(
        run_id=run_id,
        store_id=integer("store_id", 1, 2**62),
        shelf_length_cm=length,
        candidate_products=_product_ids(text("candidate_products")),
        max_facings=integer("max_facings", *MAX_FACINGS_RANGE),
        n_scenarios=integer("n_scenarios", *N_SCENARIOS_RANGE),
        seed=integer("seed", 0, 2**32 - 1),
    )


def _product_ids(raw: str) -> tuple[int, ...] | None:
    if not raw:
        return None
    ids: list[int] = []
    for token in raw.split(","):
        token = token.strip()
        if not token.isdigit():
            raise ValueError(
                "job parameter 'candidate_products' must be comma-separated product ids like '3,7,12' "
                f"(empty for every product), got {raw!r}"
            )
        ids.append(int(token))
    return tuple(dict.fromkeys(ids))


def select_candidates(
    request: ShelfRequest, products: pd.DataFrame, store_ids: Sequence[int]
) -> pd.DataFrame:
    """The candidate products (``products`` rows, by ``product_id``) after checking the request against them.

    Raises ValueError for an unknown store, unknown product ids, or candidates none of which fits the shelf.
    """
    if request.store_id not in set(int(s) for s in store_ids):
        known = sorted(int(s) for s in store_ids)
        raise ValueError(
            f"job parameter 'store_id': store {request.store_id} does not exist; stores: {known}"
        )
    catalog = products.set_index("product_id", drop=False)
    wanted = list(request.candidate_products or catalog.index)
    unknown = [p for p in wanted if p not in catalog.index]
    if unknown:
        raise ValueError(f"job parameter 'candidate_products': unknown product id(s) {unknown}")
    candidates = catalog.loc[wanted].reset_index(drop=True)
    if not (candidates.width_cm <= request.shelf_length_cm).any():
        raise ValueError(
            f"job parameter 'shelf_length_cm': no candidate fits a {request.shelf_length_cm:g} cm shelf "
            f"(the narrowest is {candidates.width_cm.min():g} cm)"
        )
    return candidates


# Scenarios ------------------------------------------------------------------------------------------------
def demand_scenarios(
    expected_units: np.ndarray,
    categories: Sequence[str],
    n_scenarios: int,
    seed: int,
    *,
    store_sd: float = 0.10,
    category_sd: float = 0.20,
    product_sd: float = 0.25,
) -> np.ndarray:
    """Weekly demand per product (rows) and scenario (columns) at one facing.

    One scenario is the expectation itself. More scenarios multiply it by mean-one log-normal shocks: one
    for the whole store, one per category, one per product — so products of a category rise and fall
    together and a layout spread over categories is less risky.
    """
    expected = np.asarray(expected_units, dtype=np.float64)
    if expected.ndim != 1 or len(expected) != len(categories):
        raise ValueError("expected_units must be a 1-d array with one entry per category label")
    if (expected < 0).any() or not np.isfinite(expected).all():
        raise ValueError("expected_units must be finite and non-negative")
    if n_scenarios < 1:
        raise ValueError(f"n_scenarios must be at least 1, got {n_scenarios}")
    if n_scenarios == 1:
        return expected[:, None].copy()
    rng = np.random.default_rng(seed)
    levels, category = np.unique(np.asarray(categories, dtype=str), return_inverse=True)
    z = (
        rng.normal(0.0, store_sd, n_scenarios)[None, :]
        + rng.normal(0.0, category_sd, (len(levels), n_scenarios))[category]
        + rng.normal(0.0, product_sd, (len(expected), n_scenarios))
    )
    variance = store_sd**2 + category_sd**2 + product_sd**2
    return expected[:, None] * np.exp(z - variance / 2)


# The program ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShelfModel:
    """The model's operating assumptions (see the module docstring)."""

    space_elasticity: float = 0.2
    units_per_facing: float = 84.0  # a facing 12 units deep, refilled every night
    restock_units_per_metre: float = 100.0  # daytime restocking budget per metre of shelf per week
    risk_weight: float = 0.5  # 0: mean margin only; towards 1: the bad weeks count more
    cvar_alpha: float = 0.2  # the worst 20 % of weeks

    def __post_init__(self) -> None:
        if not 0 <= self.space_elasticity < 1:
            raise ValueError("space_elasticity must be in [0, 1): each extra facing must add less")
        if self.units_per_facing <= 0 or self.restock_units_per_metre < 0:
            raise ValueError("units_per_facing must be positive and restock_units_per_metre non-negative")
        if not 0 <= self.risk_weight < 1 or not 0 < self.cvar_alpha <= 1:
            raise ValueError("risk_weight must be in [0, 1) and cvar_alpha in (0, 1]")


@dataclass(frozen=True)
class ShelfSolution:
    """The optimal facings and what they are expected to sell (means over the scenarios)."""

    facings: np.ndarray  # per candidate
    expected_units: np.ndarray  # per candidate: mean weekly units sold
    expected_demand: np.ndarray  # per candidate: mean weekly demand at its facings
    expected_margin: np.ndarray  # per candidate: mean weekly margin
    cvar_margin: float  # mean margin of the worst cvar_alpha share of scenarios
    objective: float  # (1 - risk_weight) * mean margin + risk_weight * CVaR, as the program maximised it
    category_coverage: bool  # whether every category was required to get a facing
    status: str
    solve_seconds: float
    n_variables: int
    n_constraints: int

    @property
    def total_margin(self) -> float:
        return float(self.expected_margin.sum())


def solve_layout(
    candidates: pd.DataFrame,
    demand: np.ndarray,
    shelf_length_cm: float,
    max_facings: int,
    model: ShelfModel = ShelfModel(),
    time_limit_s: float | None = None,
) -> ShelfSolution:
    """Solve the facings program for ``candidates`` (``width_cm``, ``margin``, ``category``) and ``demand``.

    ``demand`` is weekly demand at one facing, one row per candidate and one column per scenario.
    """
    widths = candidates["width_cm"].to_numpy(np.float64)
    margins = candidates["margin"].to_numpy(np.float64)
    categories = candidates["category"].astype(str).to_numpy()
    n, F = len(candidates), int(max_facings)
    demand = np.asarray(demand, dtype=np.float64)
    if demand.ndim != 2 or demand.shape[0] != n:
        raise ValueError(f"demand must have one row per candidate ({n}), got shape {demand.shape}")
    if n == 0 or F < 1 or shelf_length_cm <= 0:
        raise ValueError("need at least one candidate, max_facings >= 1 and a positive shelf length")
    S = demand.shape[1]
    # Demand with k facings, and what the k-th facing adds (positive and shrinking in k).
    levels = np.arange(F + 1, dtype=np.float64) ** model.space_elasticity
    levels[0] = 0.0
    added = demand[:, :, None] * np.diff(levels)[None, None, :]  # n × S × F

    # Variable layout: x (n·F binaries), y sales (n·S), r restocking (n·S), eta, u (S).
    nx, ny = n * F, n * S
    y0, r0, eta, u0 = nx, nx + ny, nx + 2 * ny, nx + 2 * ny + 1
    n_vars = u0 + S
    x_of = np.arange(nx).reshape(n, F)
    y_of = y0 + np.arange(ny).reshape(n, S)
    r_of = r0 + np.arange(ny).reshape(n, S)

    blocks: list[sparse.coo_matrix] = []
    lower: list[np.ndarray] = []
    upper: list[np.ndarray] = []

    def add(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, lo: float, hi: float) -> None:
        blocks.append(sparse.coo_matrix((vals, (rows, cols)), shape=(n_rows, n_vars)))
        lower.append(np.full(n_rows, lo))
        upper.append(np.full(n_rows, hi))

    pair = np.arange(ny).reshape(n, S)  # one row per (product, scenario)
    # Sales within demand: y[i,s] - sum_k added[i,s,k] x[i,k] <= 0
    add(
        np.concatenate([pair.ravel(), np.repeat(pair.ravel(), F)]),
        np.concatenate([y_of.ravel(), np.repeat(x_of, S, axis=0).ravel()]),
        np.concatenate([np.ones(ny), -added.ravel()]),
        ny,
        -np.inf,
        0.0,
    )
    # Sales within shelf stock plus restocking: y[i,s] - r[i,s] - units_per_facing * sum_k x[i,k] <= 0
    add(
        np.concatenate([pair.ravel(), pair.ravel(), np.repeat(pair.ravel(), F)]),
        np.concatenate([y_of.ravel(), r_of.ravel(), np.repeat(x_of, S, axis=0).ravel()]),
        np.concatenate([np.ones(ny), -np.ones(ny), np.full(ny * F, -model.units_per_facing)]),
        ny,
        -np.inf,
        0.0,
    )
    # Restocking budget per scenario: sum_i r[i,s] <= budget
    budget = model.restock_units_per_metre * shelf_length_cm / 100.0
    add(np.tile(np.arange(S), n), r_of.ravel(), np.ones(ny), S, -np.inf, budget)
    # CVaR: eta - u[s] - sum_i margin_i y[i,s] <= 0
    add(
        np.concatenate([np.arange(S), np.arange(S), np.tile(np.arange(S), n)]),
        np.concatenate([np.full(S, eta), u0 + np.arange(S), y_of.ravel()]),
        np.concatenate([np.ones(S), -np.ones(S), -np.repeat(margins, S)]),
        S,
        -np.inf,
        0.0,
    )
    # Width: sum_i,k width_i x[i,k] <= shelf length
    add(np.zeros(nx, dtype=int), x_of.ravel(), np.repeat(widths, F), 1, -np.inf, shelf_length_cm)
    # Facings in order: x[i,k] <= x[i,k-1]
    if F > 1:
        m = n * (F - 1)
        order = np.arange(m)
        add(
            np.concatenate([order, order]),
            np.concatenate([x_of[:, 1:].ravel(), x_of[:, :-1].ravel()]),
            np.concatenate([np.ones(m), -np.ones(m)]),
            m,
            -np.inf,
            0.0,
        )
    # Every category present gets a facing, if one product of each fits.
    levels_c, category = np.unique(categories, return_inverse=True)
    narrowest = pd.Series(widths).groupby(category).min().sum()
    coverage = bool(narrowest <= shelf_length_cm)
    if coverage:
        add(category, x_of[:, 0], np.ones(n), len(levels_c), 1.0, np.inf)

    cost = np.zeros(n_vars)  # milp minimises: the negated objective
    cost[y_of.ravel()] = -(1 - model.risk_weight) / S * np.repeat(margins, S)
    cost[eta] = -model.risk_weight
    cost[u0:] = model.risk_weight / (model.cvar_alpha * S)
    lb = np.zeros(n_vars)
    ub = np.full(n_vars, np.inf)
    ub[:nx] = 1.0
    lb[eta] = -np.inf
    integrality = np.zeros(n_vars)
    integrality[:nx] = 1
    matrix = sparse.vstack(blocks).tocsr()
    options: dict[str, Any] = {"disp": False}
    if time_limit_s is not None:
        options["time_limit"] = float(time_limit_s)

    started = time.perf_counter()
    result = milp(
        cost,
        constraints=LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper)),
        integrality=integrality,
        bounds=Bounds(lb, ub),
        options=options,
    )
    seconds = time.perf_counter() - started
    if result.x is None:
        raise RuntimeError(
            f"the shelf program found no layout (HiGHS status {result.status}): {result.message}"
        )
    solution = result.x
    facings = np.rint(solution[x_of]).sum(axis=1).astype(np.int64)
    sales = solution[y_of]
    scenario_margin = (margins[:, None] * sales).sum(axis=0)
    worst = max(1, math.ceil(model.cvar_alpha * S))
    demand_at = demand * levels[facings][:, None]
    return ShelfSolution(
        facings=facings,
        expected_units=sales.mean(axis=1),
        expected_demand=demand_at.mean(axis=1),
        expected_margin=margins * sales.mean(axis=1),
        cvar_margin=float(np.sort(scenario_margin)[:worst].mean()),
        objective=float(-result.fun),
        category_coverage=coverage,
        status="OPTIMAL" if result.status == 0 else "TIME_LIMIT",
        solve_seconds=seconds,
        n_variables=n_vars,
        n_constraints=matrix.shape[0],
    )


# The layout -----------------------------------------------------------------------------------------------
def layout_positions(
    run_id: str, store_id: int, candidates: pd.DataFrame, solution: ShelfSolution
) -> pd.DataFrame:
    """One row per product on the shelf, left to right: category blocks (best-earning category first),
    best-earning products first within a block."""
    placed = candidates.assign(
        facings=solution.facings,
        expected_units=solution.expected_units,
        expected_margin=solution.expected_margin,
        fill_rate=np.divide(
            solution.expected_units,
            solution.expected_demand,
            out=np.ones(len(candidates)),
            where=solution.expected_demand > 0,
        ),
    ).query("facings > 0")
    block_margin = placed.groupby("category")["expected_margin"].transform("sum")
    placed = (
        placed.assign(_block=block_margin)
        .sort_values(["_block", "category", "expected_margin"], ascending=[False, True, False])
        .reset_index(drop=True)
    )
    width = placed["width_cm"] * placed["facings"]
    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "position": np.arange(1, len(placed) + 1, dtype=np.int64),
            "store_id": np.int64(store_id),
            "product_id": placed["product_id"].astype(np.int64),
            "name": placed["name"].astype(str),
            "category": placed["category"].astype(str),
            "facings": placed["facings"].astype(np.int64),
            "unit_width_cm": placed["width_cm"].astype(np.float64),
            "width_cm": width.round(2),
            "x_start_cm": (width.cumsum() - width).round(2),
            "expected_units": placed["expected_units"].round(2),
            "expected_margin": placed["expected_margin"].round(2),
            "fill_rate": placed["fill_rate"].clip(upper=1.0).round(4),
        }
    )
    return frame[LAYOUT_SCHEMA.names]


def result_row(
    request: ShelfRequest, layout: pd.DataFrame, solution: ShelfSolution, completed_at: pd.Timestamp
) -> pd.DataFrame:
    """The one-row summary served by ``run_id``; ``layout_json`` holds every position."""
    positions = layout.drop(columns=["run_id", "store_id"]).to_dict(orient="records")
    row = {
        "run_id": request.run_id,
        "store_id": request.store_id,
        "shelf_length_cm": request.shelf_length_cm,
        "used_width_cm": round(float(layout["width_cm"].sum()), 2),
        "n_positions": len(layout),
        "n_facings": int(layout["facings"].sum()),
        "expected_weekly_units": round(float(layout["expected_units"].sum()), 2),
        "expected_weekly_margin": round(solution.total_margin, 2),
        "cvar_weekly_margin": round(solution.cvar_margin, 2),
        "n_scenarios": request.n_scenarios,
        "solver_status": solution.status,
        "solve_seconds": round(solution.solve_seconds, 3),
        "layout_json": json.dumps(positions),
        "completed_at": completed_at.tz_localize("UTC") if completed_at.tzinfo is None else completed_at,
    }
    frame = pd.DataFrame([row])
    frame["completed_at"] = frame["completed_at"].astype("datetime64[us, UTC]")  # converts other zones
    return frame[RESULT_SCHEMA.names]


def layout_from_json(layout_json: str) -> pd.DataFrame:
    """The positions a result row (or an endpoint answer) carries, as a frame."""
    return pd.DataFrame(json.loads(layout_json))


# The picture ----------------------------------------------------------------------------------------------
def plot_shelf(layout: pd.DataFrame, shelf_length_cm: float, title: str | None = None, ax: Any = None) -> Any:
    """Draw the shelf: one block per product (a line per facing), coloured by category, left to right."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(min(18, 4 + shelf_length_cm / 25), 3.6))
    palette = plt.get_cmap("tab10")
    categories = sorted(layout["category"].unique()) if len(layout) else []
    colour = {c: palette(i % 10) for i, c in enumerate(categories)}
    height = 30.0
    for row in layout.itertuples():
        ax.add_patch(
            Rectangle(
                (row.x_start_cm, 0),
                row.width_cm,
                height,
                facecolor=colour[row.category],
                edgecolor="white",
                alpha=0.85,
                linewidth=1.5,
            )
        )
        for k in range(1, row.facings):
            x = row.x_start_cm + k * row.unit_width_cm
            ax.plot([x, x], [0, height], color="white", lw=0.6, alpha=0.8)
        label = f"{row.name}\n×{row.facings} · {row.expected_margin:.0f}/wk"
        ax.text(
            row.x_start_cm + row.width_cm / 2,
            height / 2,
            label,
            rotation=90,
            ha="center",
            va="center",
            fontsize=6.5,
            color="black",
            clip_on=True,
        )
    used = float(layout["width_cm"].sum()) if len(layout) else 0.0
    if used < shelf_length_cm:
        ax.add_patch(
            Rectangle(
                (used, 0),
                shelf_length_cm - used,
                height,
                facecolor="none",
                edgecolor="grey",
                hatch="//",
                linewidth=0.5,
            )
        )
    ax.set_xlim(0, shelf_length_cm)
    ax.set_ylim(0, height * 1.05)
    ax.set_yticks([])
    ax.set_xlabel("shelf position (cm)")
    handles = [Rectangle((0, 0), 1, 1, facecolor=colour[c]) for c in categories]
    ax.legend(
        handles,
        categories,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=max(1, len(categories)),
        fontsize=7,
        frameon=False,
    )
    if title:
        ax.set_title(title, fontsize=10)
    return ax
