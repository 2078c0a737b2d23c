"""The shelf layout program: request validation, scenarios, an optimum checked by brute force, the layout."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.optimize import linprog

from helpers import data, shelf

PARAMETERS = {
    "run_id": "123",
    "store_id": "2",
    "shelf_length_cm": "300",
    "candidate_products": "",
    "max_facings": "3",
    "n_scenarios": "1",
    "seed": "7",
}


@pytest.fixture(scope="module")
def products() -> pd.DataFrame:
    return data.generate_products(24, seed=3)


def _expected_units(products: pd.DataFrame) -> np.ndarray:
    return 7 * products.base_daily_units.to_numpy()


def test_parse_request_types_the_parameters() -> None:
    request = shelf.parse_request(
        {**PARAMETERS, "candidate_products": " 4, 2,4 ", "shelf_length_cm": "120.5"}
    )
    assert request == shelf.ShelfRequest(
        run_id="123",
        store_id=2,
        shelf_length_cm=120.5,
        candidate_products=(4, 2),
        max_facings=3,
        n_scenarios=1,
        seed=7,
    )
    assert shelf.parse_request(PARAMETERS).candidate_products is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("shelf_length_cm", "-5"),
        ("shelf_length_cm", "abc"),
        ("shelf_length_cm", "nan"),
        ("shelf_length_cm", "2500"),
        ("store_id", "one"),
        ("store_id", "0"),
        ("candidate_products", "1,x"),
        ("candidate_products", "1,,2"),
        ("max_facings", "0"),
        ("max_facings", "11"),
        ("n_scenarios", "0"),
        ("run_id", ""),
        ("run_id", "{{job.run_id}}"),
        ("seed", "-1"),
    ],
)
def test_parse_request_refuses_a_bad_parameter_by_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'.*{value!r}".replace("{", r"\{").replace("}", r"\}")):
        shelf.parse_request({**PARAMETERS, name: value})


def test_parse_request_names_a_missing_parameter() -> None:
    with pytest.raises(ValueError, match="'max_facings' is missing"):
        shelf.parse_request({k: v for k, v in PARAMETERS.items() if k != "max_facings"})


def test_select_candidates_checks_the_request_against_the_catalog(products: pd.DataFrame) -> None:
    request = shelf.parse_request({**PARAMETERS, "candidate_products": "5,1"})
    assert shelf.select_candidates(request, products, [1, 2]).product_id.tolist() == [5, 1]
    assert len(shelf.select_candidates(shelf.parse_request(PARAMETERS), products, [2])) == len(products)
    with pytest.raises(ValueError, match=r"'store_id': store 2 does not exist; stores: \[1, 3\]"):
        shelf.select_candidates(request, products, [3, 1])
    with pytest.raises(ValueError, match=r"'candidate_products': unknown product id\(s\) \[99\]"):
        shelf.select_candidates(
            shelf.parse_request({**PARAMETERS, "candidate_products": "1,99"}), products, [2]
        )
    narrow = shelf.parse_request({**PARAMETERS, "shelf_length_cm": "50"})
    wide = products.assign(width_cm=60.0)
    with pytest.raises(ValueError, match="no candidate fits a 50 cm shelf"):
        shelf.select_candidates(narrow, wide, [2])


def test_one_scenario_is_the_expectation_and_more_are_seeded_mean_one_shocks(products: pd.DataFrame) -> None:
    expected = _expected_units(products)
    categories = products.category.tolist()
    np.testing.assert_array_equal(shelf.demand_scenarios(expected, categories, 1, seed=1)[:, 0], expected)
    many = shelf.demand_scenarios(expected, categories, 4000, seed=1)
    assert many.shape == (len(products), 4000)
    np.testing.assert_allclose(many.mean(axis=1) / expected, 1, atol=0.05)
    np.testing.assert_array_equal(
        many[:, :10], shelf.demand_scenarios(expected, categories, 4000, seed=1)[:, :10]
    )
    assert not np.array_equal(many, shelf.demand_scenarios(expected, categories, 4000, seed=2))
    # Products of one category move together more than products of different categories.
    logs = np.corrcoef(np.log(many))
    same = products.category.to_numpy()[:, None] == products.category.to_numpy()[None, :]
    off_diagonal = ~np.eye(len(products), dtype=bool)
    assert logs[same & off_diagonal].mean() > logs[~same].mean() + 0.2


def _second_stage_value(
    facings: np.ndarray, candidates: pd.DataFrame, demand: np.ndarray, length: float, model: shelf.ShelfModel
) -> float:
    """The best objective for fixed facings: an LP over sales, restocking and the CVaR variables."""
    n, S = demand.shape
    margin = candidates.margin.to_numpy()
    at = demand * np.where(facings > 0, facings.astype(float) ** model.space_elasticity, 0.0)[:, None]
    # variables: y (n*S), r (n*S), eta, u (S)
    nv = 2 * n * S + 1 + S
    c = np.zeros(nv)
    c[: n * S] = -(1 - model.risk_weight) / S * np.repeat(margin, S)
    c[2 * n * S] = -model.risk_weight
    c[2 * n * S + 1 :] = model.risk_weight / (model.cvar_alpha * S)
    rows, rhs = [], []
    for i, s in itertools.product(range(n), range(S)):
        row = np.zeros(nv)
        row[i * S + s], row[n * S + i * S + s] = 1, -1
        rows.append(row)
        rhs.append(model.units_per_facing * facings[i])
    for s in range(S):
        row = np.zeros(nv)
        row[n * S + np.arange(n) * S + s] = 1
        rows.append(row)
        rhs.append(model.restock_units_per_metre * length / 100)
        row = np.zeros(nv)
        row[np.arange(n) * S + s] = -margin
        row[2 * n * S], row[2 * n * S + 1 + s] = 1, -1
        rows.append(row)
        rhs.append(0)
    bounds = [(0, at[i, s]) for i in range(n) for s in range(S)] + [(0, None)] * (n * S)
    bounds += [(None, None)] + [(0, None)] * S
    result = linprog(c, A_ub=np.array(rows), b_ub=rhs, bounds=bounds, method="highs")
    assert result.status == 0
    return -result.fun


def test_the_program_finds_the_brute_force_optimum() -> None:
    products = data.generate_products(5, seed=11).assign(category=["a", "a", "b", "b", "c"])
    length, max_facings = 70.0, 2
    model = shelf.ShelfModel(restock_units_per_metre=60)
    demand = shelf.demand_scenarios(_expected_units(products) * 1.5, products.category.tolist(), 4, seed=5)
    solution = shelf.solve_layout(products, demand, length, max_facings, model)
    widths = products.width_cm.to_numpy()
    best = -np.inf
    for combo in itertools.product(range(max_facings + 1), repeat=len(products)):
        facings = np.array(combo)
        covered = {c for c, f in zip(products.category, facings, strict=True) if f}
        if widths @ facings > length or covered != {"a", "b", "c"}:
            continue
        best = max(best, _second_stage_value(facings, products, demand, length, model))
    assert solution.category_coverage
    assert solution.objective == pytest.approx(best, rel=1e-6)
    at_solution = _second_stage_value(solution.facings, products, demand, length, model)
    assert at_solution == pytest.approx(best, rel=1e-6)


def test_the_layout_respects_the_shelf_and_the_assortment(products: pd.DataFrame) -> None:
    demand = shelf.demand_scenarios(_expected_units(products), products.category.tolist(), 6, seed=1)
    solution = shelf.solve_layout(products, demand, 240.0, 3)
    assert solution.status == "OPTIMAL"
    assert (solution.facings >= 0).all() and (solution.facings <= 3).all()
    assert products.width_cm.to_numpy() @ solution.facings <= 240.0 + 1e-6
    assert set(products.category[solution.facings > 0]) == set(products.category)
    assert (solution.expected_units <= solution.expected_demand + 1e-6).all()
    assert solution.cvar_margin <= solution.total_margin + 1e-6


def test_a_short_shelf_drops_the_assortment_rule_instead_of_failing(products: pd.DataFrame) -> None:
    demand = _expected_units(products)[:, None]
    solution = shelf.solve_layout(products, demand, 55.0, 2)
    assert not solution.category_coverage
    assert 0 < products.width_cm.to_numpy() @ solution.facings <= 55.0


def test_extra_facings_add_less_and_more_shelf_never_earns_less(products: pd.DataFrame) -> None:
    demand = _expected_units(products)[:, None]
    margins = [shelf.solve_layout(products, demand, length, 3).objective for length in (150, 250, 350, 450)]
    assert margins == sorted(margins)
    gains = np.diff(margins)
    assert gains[-1] < gains[0]  # diminishing returns of space
    one = products.head(1)
    per_facing = [shelf.solve_layout(one, demand[:1], 500, k).objective for k in (1, 2, 3, 4)]
    assert np.all(np.diff(np.diff(per_facing)) <= 1e-6)


def test_positions_run_left_to_right_in_category_blocks(products: pd.DataFrame) -> None:
    demand = shelf.demand_scenarios(_expected_units(products), products.category.tolist(), 3, seed=2)
    solution = shelf.solve_layout(products, demand, 300.0, 3)
    layout = shelf.layout_positions("77", 2, products, solution)
    assert layout.position.tolist() == list(range(1, len(layout) + 1))
    assert len(layout) == int((solution.facings > 0).sum())
    np.testing.assert_allclose(
        layout.x_start_cm.iloc[1:], (layout.x_start_cm + layout.width_cm).iloc[:-1], atol=0.02
    )
    np.testing.assert_allclose(layout.width_cm, layout.unit_width_cm * layout.facings, atol=0.01)
    blocks = layout.category.tolist()
    assert len({c for c, _ in itertools.groupby(blocks)}) == len(list(itertools.groupby(blocks)))
    assert layout.fill_rate.between(0, 1).all()
    pa.Table.from_pandas(layout, schema=shelf.LAYOUT_SCHEMA, preserve_index=False)  # the declared types


def test_the_result_row_carries_the_whole_layout(products: pd.DataFrame) -> None:
    request = shelf.parse_request({**PARAMETERS, "n_scenarios": "3"})
    demand = shelf.demand_scenarios(_expected_units(products), products.category.tolist(), 3, seed=2)
    solution = shelf.solve_layout(products, demand, request.shelf_length_cm, request.max_facings)
    layout = shelf.layout_positions(request.run_id, request.store_id, products, solution)
    row = shelf.result_row(request, layout, solution, pd.Timestamp("2025-03-01 10:00:00"))
    assert len(row) == 1 and row.run_id[0] == "123"
    assert row.n_positions[0] == len(layout) and row.n_facings[0] == layout.facings.sum()
    assert row.expected_weekly_margin[0] == pytest.approx(layout.expected_margin.sum(), abs=0.05)
    restored = shelf.layout_from_json(row.layout_json[0])
    pd.testing.assert_frame_equal(restored, layout.drop(columns=["run_id", "store_id"]), check_dtype=False)
    json.loads(row.layout_json[0])
    pa.Table.from_pandas(row, schema=shelf.RESULT_SCHEMA, preserve_index=False)


def test_result_tables_take_merges(state_dir, products: pd.DataFrame) -> None:
    from helpers import platform
    from helpers.features import create_or_merge_table

    platform.settings()
    fe = platform.feature_engineering_client()
    names = ("main.shelf_test.layouts", "main.shelf_test.results")
    fe.create_table(name=names[0], primary_keys=shelf.LAYOUT_KEYS, schema=shelf.LAYOUT_SCHEMA)
    fe.create_table(name=names[1], primary_keys=shelf.RESULT_KEYS, schema=shelf.RESULT_SCHEMA)
    assert fe.get_table(name=names[0]).primary_keys == ["run_id", "position"]
    request = shelf.parse_request(PARAMETERS)
    solution = shelf.solve_layout(products, _expected_units(products)[:, None], 300.0, 3)
    layout = shelf.layout_positions(request.run_id, request.store_id, products, solution)
    assert create_or_merge_table(fe, name=names[0], df=layout, primary_keys=shelf.LAYOUT_KEYS) == "merged"
    row = shelf.result_row(request, layout, solution, pd.Timestamp("2025-03-01"))
    assert create_or_merge_table(fe, name=names[1], df=row, primary_keys=shelf.RESULT_KEYS) == "merged"
    stored = fe.read_table(name=names[1])
    assert stored.run_id.tolist() == ["123"] and stored.layout_json[0] == row.layout_json[0]


def test_plot_shelf_draws_one_block_per_position(products: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    solution = shelf.solve_layout(products, _expected_units(products)[:, None], 400.0, 3)
    layout = shelf.layout_positions("1", 1, products, solution)
    ax = shelf.plot_shelf(layout, 400.0, title="store 1")
    unused = layout.width_cm.sum() < 400.0
    assert len(ax.patches) == len(layout) + unused
    assert ax.get_xlim() == (0, 400.0) and ax.get_title() == "store 1"
