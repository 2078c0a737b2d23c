"""Bad input on every route of the workspace server: a 4xx in Databricks' error shape, never a 500.

One server (in-process, ``serve_jobs``) serves a feature-spec endpoint over a Python function and holds three
jobs (none can start a notebook: ``max_concurrent_runs`` 0 skips every run). Hypothesis throws generated
bodies and query strings at each route: arbitrary bytes, arbitrary JSON, and valid requests with one field
replaced, removed or joined by an unknown one (NaN, infinities, huge numbers, unicode, SQL-shaped keys).
"""

from __future__ import annotations

import copy
import itertools
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import fresh_state
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobs_server import JobsServer, serve_jobs

from helpers.local.feature_spec import FeatureSpec, FunctionSpec
from helpers.local.functions import FunctionRegistry
from helpers.local.publishing import feature_spec_path
from helpers.local.server.limits import MAX_REQUEST_BYTES

ENDPOINT = "fz-spec"
SPEC = "main.fz.doubled"
JOBS = "/api/2.2/jobs"
TRIED: Counter[str] = Counter()  # bad inputs sent per route (printed with -s)
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "é" * 300,
    "🙂",
    "'; DROP TABLE runs; --",
    "1 OR 1=1",
    '" OR ""="',
    "../../etc/passwd",
    "/etc/passwd",
    "NaN",
    "-1",
    "1e999",
    "9" * 40,
    "%00",
    "main.default.x; DELETE FROM jobs",
]
SQL_KEYS = ["'; DROP TABLE jobs; --", "job_id OR 1=1", "name\x00", "__proto__", "$where"]


@dataclass(frozen=True)
class Seeds:
    server: JobsServer
    run_job: int  # run-now and the runs routes use it; it is never changed
    edit_job: int  # reset and update change it
    doomed_job: int  # delete's template names it
    run_id: int
    task_run_id: int


def _post(server: JobsServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(f"{server.url}{path}", json=body, headers=_auth(server), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _auth(server: JobsServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _wait_until_deployed(server: JobsServer) -> None:
    url = f"{server.url}/api/2.0/serving-endpoints/{ENDPOINT}"
    deadline = time.monotonic() + 120
    while (
        requests.get(url, headers=_auth(server), timeout=30).json()["state"]["config_update"] == "IN_PROGRESS"
    ):
        assert time.monotonic() < deadline, "the endpoint did not deploy"
        time.sleep(0.05)


JOB = {
    "name": "fz",
    "max_concurrent_runs": 0,
    "tasks": [{"task_key": "t", "notebook_task": {"notebook_path": "notebooks/jobs/probe"}}],
}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeds]:
    state_dir: Path = fresh_state.seed(tmp_path_factory.mktemp("bad-input"))
    FunctionRegistry(state_dir).create("main.fz.double", {"x": "DOUBLE"}, "DOUBLE", "return x * 2")
    spec = FeatureSpec(functions=[FunctionSpec("main.fz.double", {"x": "x"}, "x2")])
    spec.save(feature_spec_path(state_dir, SPEC))
    with serve_jobs(state_dir) as server:
        _post(server, "/api/2.0/serving-endpoints", {"name": ENDPOINT, "config": CONFIG})
        _wait_until_deployed(server)
        run_job, edit_job, doomed_job = (_post(server, f"{JOBS}/create", JOB)["job_id"] for _ in range(3))
        run_id = _post(server, f"{JOBS}/run-now", {"job_id": run_job})["run_id"]
        run = requests.get(f"{server.url}{JOBS}/runs/get?run_id={run_id}", headers=_auth(server), timeout=30)
        yield Seeds(server, run_job, edit_job, doomed_job, run_id, run.json()["tasks"][0]["run_id"])
    print("\nbad inputs tried per route:", *sorted(TRIED.items()), sep="\n  ")


CONFIG = {
    "served_entities": [
        {"name": "doubled", "entity_name": SPEC, "workload_size": "Small", "scale_to_zero_enabled": True}
    ],
    "traffic_config": {"routes": [{"served_model_name": "doubled", "traffic_percentage": 100}]},
    "auto_capture_config": {"catalog_name": "main", "schema_name": "fz", "enabled": False},
}
GATEWAY = {
    "inference_table_config": {
        "catalog_name": "main",
        "schema_name": "fz",
        "table_name_prefix": "fz",
        "enabled": False,
    }
}


# Strategies ------------------------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(NASTY_STRINGS),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(SQL_KEYS))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


@st.composite
def near_valid(draw: st.DrawFn, template: dict[str, Any]) -> dict[str, Any]:
    """``template`` with one field replaced, removed, or given an unknown sibling."""
    doc = copy.deepcopy(template)
    path = draw(st.sampled_from(list(_paths(doc))[1:]))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "remove":
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(keys)] = draw(values)
    else:
        parent[path[-1]] = draw(values)
    return doc


def _fresh_name(doc: Any) -> Any:
    """A request that would create ``fz-new`` creates a new endpoint each time (not 409 after the first)."""
    if isinstance(doc, dict) and doc.get("name") == "fz-new":
        return {**doc, "name": f"fz-{next(_NUMBERS)}"}
    return doc


_NUMBERS = itertools.count()


def bodies(*templates: dict[str, Any]) -> st.SearchStrategy[bytes]:
    documents = st.one_of(values, *(near_valid(t) for t in templates)).map(_fresh_name)
    return st.one_of(st.binary(max_size=64), documents.map(lambda d: json.dumps(d).encode()))


def _encodable(text: str) -> bool:
    return not any("\ud800" <= c <= "\udfff" for c in text)


def queries(template: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    text = st.one_of(st.text(max_size=20), st.sampled_from(NASTY_STRINGS), st.integers().map(str)).filter(
        _encodable
    )
    broken = st.builds(
        lambda extra, base: {**base, **extra}, st.dictionaries(keys, text, max_size=3), st.just(template)
    )
    replaced = st.sampled_from(sorted(template) or ["x"]).flatmap(
        lambda key: text.map(lambda value: {**template, key: value})
    )
    return st.one_of(broken, replaced, st.dictionaries(st.sampled_from([*template, *SQL_KEYS]), text))


# Checks ----------------------------------------------------------------------------------------------------
def check(route: str, response: requests.Response) -> None:
    """A 4xx (or 2xx) answer, never a 500; an error in Databricks' shape, with a message and no traceback."""
    TRIED[route] += 1
    assert response.status_code < 500, f"{route}: {response.status_code} {response.text[:800]}"
    _standard_json(response.text)  # every answer, errors too
    if response.status_code >= 400:
        error = response.json()
        assert isinstance(error.get("error_code"), str) and error["error_code"], error
        assert isinstance(error.get("message"), str) and error["message"], error
        assert "Traceback" not in error["message"], error


def _standard_json(text: str) -> Any:
    """``text`` parsed as standard JSON (Python would take ``NaN`` and ``Infinity``; JSON has neither)."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON: {text[:300]}")

    return json.loads(text, parse_constant=refuse)


def send(seeds: Seeds, method: str, path: str, route: str, **kwargs: Any) -> None:
    url, headers = f"{seeds.server.url}{path}", {**_auth(seeds.server), "Content-Type": "application/json"}
    check(route, requests.request(method, url, headers=headers, timeout=30, **kwargs))


BODY_ROUTES = {
    "create endpoint": (
        "POST",
        "/api/2.0/serving-endpoints",
        lambda s: [
            {
                "name": "fz-new",
                "config": CONFIG,
                "ai_gateway": GATEWAY,
                "description": "d",
                "tags": [{"key": "k", "value": "v"}],
            }
        ],
    ),
    "update config": ("PUT", f"/api/2.0/serving-endpoints/{ENDPOINT}/config", lambda s: [CONFIG]),
    "ai-gateway": ("PUT", f"/api/2.0/serving-endpoints/{ENDPOINT}/ai-gateway", lambda s: [GATEWAY]),
    "invocations": (
        "POST",
        f"/serving-endpoints/{ENDPOINT}/invocations",
        lambda s: [
            {"dataframe_records": [{"x": 1.5}], "params": {"a": 1}, "client_request_id": "c"},
            {"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.0]]}},
            {"inputs": {"x": [1.0, 2.0]}},
            {"instances": [{"x": 3}]},
        ],
    ),
    "jobs/create": (
        "POST",
        f"{JOBS}/create",
        lambda s: [
            {
                **JOB,
                "tasks": [
                    *JOB["tasks"],
                    {
                        "task_key": "u",
                        "depends_on": [{"task_key": "t"}],
                        "timeout_seconds": 1,
                        "run_if": "ALL_SUCCESS",
                        "notebook_task": {
                            "notebook_path": "notebooks/jobs/probe",
                            "base_parameters": {"a": "b"},
                        },
                    },
                ],
                "parameters": [{"name": "p", "default": "1"}],
                "timeout_seconds": 5,
                "queue": {"enabled": True},
            }
        ],
    ),
    "jobs/reset": ("POST", f"{JOBS}/reset", lambda s: [{"job_id": s.edit_job, "new_settings": JOB}]),
    "jobs/update": (
        "POST",
        f"{JOBS}/update",
        lambda s: [
            {"job_id": s.edit_job, "new_settings": {"name": "x"}, "fields_to_remove": ["timeout_seconds"]}
        ],
    ),
    "jobs/run-now": (
        "POST",
        f"{JOBS}/run-now",
        lambda s: [
            {
                "job_id": s.run_job,
                "notebook_params": {"a": "b"},
                "idempotency_token": "t",
                "queue": {"enabled": True},
            },
            {"job_id": s.run_job, "job_parameters": {"a": "b"}},
        ],
    ),
    "jobs/delete": ("POST", f"{JOBS}/delete", lambda s: [{"job_id": s.doomed_job}]),
    "runs/cancel": ("POST", f"{JOBS}/runs/cancel", lambda s: [{"run_id": s.run_id}]),
}
QUERY_ROUTES = {
    "list endpoints": ("/api/2.0/serving-endpoints", lambda s: {}),
    "jobs/get": (f"{JOBS}/get", lambda s: {"job_id": str(s.run_job)}),
    "jobs/list": (
        f"{JOBS}/list",
        lambda s: {"limit": "5", "offset": "0", "name": "fz", "expand_tasks": "true"},
    ),
    "runs/get": (f"{JOBS}/runs/get", lambda s: {"run_id": str(s.run_id), "include_resolved_values": "true"}),
    "runs/list": (
        f"{JOBS}/runs/list",
        lambda s: {
            "job_id": str(s.run_job),
            "active_only": "false",
            "limit": "3",
            "page_token": "1",
            "start_time_from": "0",
            "start_time_to": "1",
        },
    ),
    "runs/get-output": (f"{JOBS}/runs/get-output", lambda s: {"run_id": str(s.task_run_id)}),
}


# Tests -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", sorted(BODY_ROUTES))
def test_generated_bodies_get_a_4xx_in_databricks_shape(seeds: Seeds, route: str) -> None:
    method, path, templates = BODY_ROUTES[route]

    @FUZZ
    @given(body=bodies(*templates(seeds)))
    def throw(body: bytes) -> None:
        send(seeds, method, path, route, data=body)

    throw()


@pytest.mark.parametrize("route", sorted(QUERY_ROUTES))
def test_generated_query_strings_get_a_4xx_in_databricks_shape(seeds: Seeds, route: str) -> None:
    path, template = QUERY_ROUTES[route]

    @FUZZ
    @given(params=queries(template(seeds)))
    def throw(params: dict[str, str]) -> None:
        send(seeds, "GET", path, route, params=params)

    throw()


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_generated_endpoint_names_get_a_4xx_in_databricks_shape(seeds: Seeds, method: str) -> None:
    names = st.one_of(
        st.text(min_size=1, max_size=30), st.sampled_from([n for n in NASTY_STRINGS if n.strip()])
    )

    @FUZZ
    @given(name=names.filter(lambda n: n != ENDPOINT and _encodable(n)))
    def throw(name: str) -> None:
        send(
            seeds, method, f"/api/2.0/serving-endpoints/{quote(name, safe='')}", f"{method} endpoint by name"
        )

    throw()


WRONG_TYPES = [None, True, 7, -1, 1.5, float("nan"), float("inf"), 10**30, "x", "", [], [1], {}, {"a": 1}]


def _with(template: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(template)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return doc


@pytest.mark.parametrize("route", sorted(BODY_ROUTES))
def test_every_field_of_a_valid_request_with_every_wrong_type_gets_a_4xx(seeds: Seeds, route: str) -> None:
    """Systematic where hypothesis samples: each field of each template, in turn, set to each JSON type."""
    method, path, templates = BODY_ROUTES[route]
    failures = []
    for template in templates(seeds):
        for field in list(_paths(template))[1:]:
            for value in WRONG_TYPES:
                try:
                    body = _fresh_name(_with(template, field, value))
                    send(seeds, method, path, route, data=json.dumps(body))
                except AssertionError as failure:
                    failures.append(f"{field} = {value!r}: {failure}")
    assert not failures, "\n".join(failures)


HAND_BODIES = {
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "deeply nested object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "NaN and infinities": b'{"job_id": NaN, "run_id": Infinity, "name": -Infinity}',
    "huge numbers": b'{"job_id": 1' + b"0" * 400 + b', "run_id": 1e400, "name": 99999999999999999999999}',
    "lone surrogate": b'{"name": "\\ud800", "job_id": "\\udfff"}',
    "not UTF-8": b'{"name": "\xff\xfe"}',
    "empty": b"",
    "null": b"null",
    "a list": b"[1, 2]",
    "truncated": b'{"name": "x", "config": {',
    "unhashable column names": b'{"dataframe_split": {"columns": [[]], "data": [[0]]}, "job_id": {}}',
}
HAND_ROUTES = [("POST", p) for p in (f"{JOBS}/create", f"{JOBS}/run-now", f"{JOBS}/runs/cancel")] + [
    ("POST", "/api/2.0/serving-endpoints"),
    ("PUT", f"/api/2.0/serving-endpoints/{ENDPOINT}/config"),
    ("POST", f"/serving-endpoints/{ENDPOINT}/invocations"),
]


@pytest.mark.parametrize("case", sorted(HAND_BODIES))
def test_hand_made_bad_bodies_get_a_4xx_on_every_body_route(seeds: Seeds, case: str) -> None:
    for method, path in HAND_ROUTES:
        send(seeds, method, path, f"{method} {path} (hand cases)", data=HAND_BODIES[case])


@pytest.mark.parametrize("method, path", HAND_ROUTES)
def test_a_body_over_16_mb_is_refused_before_it_is_read(seeds: Seeds, method: str, path: str) -> None:
    """Only the headers are sent: the answer comes before the 16 MB body would be."""
    url = urlparse(seeds.server.url)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {seeds.server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"{")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert status == 413 and error["error_code"] == "INVALID_PARAMETER_VALUE", answer
    assert "16 MB" in error["message"]
    TRIED[f"{method} {path} (oversized)"] += 1


BAD_URLS = [
    "/api/2.0/serving-endpoints/%ff%fe",
    "/api/2.0/serving-endpoints/%ED%A0%80",
    "/api/2.0/serving-endpoints/..%2F..%2Fetc%2Fpasswd",
    f"{JOBS}/get?job_id=%ff",
    f"{JOBS}/get?job_id=%00",
    f"{JOBS}/get?job_id=1&job_id=2",
    f"{JOBS}/list?limit=%ED%A0%80&offset=1e3",
    f"{JOBS}/runs/list?start_time_from=99999999999999999999999&page_token=-1",
    f"{JOBS}/runs/get-output?run_id=0x10",
    f"{JOBS}/runs/list?page_token=9999999999999999999999999999999999999999",
    f"{JOBS}/list?page_token=99999999999999999999&limit=1",
]


@pytest.mark.parametrize("path", BAD_URLS)
def test_hand_made_bad_urls_get_a_4xx(seeds: Seeds, path: str) -> None:
    send(seeds, "GET", path, "GET by hand-made URL")


def test_a_client_request_id_that_cannot_be_stored_is_refused(seeds: Seeds) -> None:
    """A lone surrogate would make every later write of the endpoint's inference table fail."""
    body = b'{"dataframe_records": [{"x": 1.0}], "client_request_id": "\\ud800"}'
    answer = requests.post(
        f"{seeds.server.url}/serving-endpoints/{ENDPOINT}/invocations",
        data=body,
        headers=_auth(seeds.server),
        timeout=30,
    )
    check("invocations", answer)
    assert answer.status_code == 400 and "client_request_id" in answer.json()["message"], answer.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_value_json_cannot_carry_is_answered_as_null(seeds: Seeds, value: str) -> None:
    """Python reads these tokens as floats; the answer is standard JSON all the same (``null``)."""
    answer = requests.post(
        f"{seeds.server.url}/serving-endpoints/{ENDPOINT}/invocations",
        data=f'{{"dataframe_records": [{{"x": {value}}}, {{"x": 2}}]}}'.encode(),
        headers=_auth(seeds.server),
        timeout=30,
    )
    check("invocations", answer)
    assert answer.status_code == 200, answer.text
    assert _standard_json(answer.text) == {"outputs": [{"x": None, "x2": None}, {"x": 2, "x2": 4.0}]}


def test_a_chunked_body_over_16_mb_is_refused_once_it_passes_the_limit(seeds: Seeds) -> None:
    """No Content-Length to trust: the server counts what arrives."""
    chunk = b" " * (1024 * 1024)

    def body() -> Iterator[bytes]:
        yield b'{"dataframe_records": ['
        for _ in range(16):
            yield chunk
        yield b"]}"

    answer = requests.post(
        f"{seeds.server.url}/serving-endpoints/{ENDPOINT}/invocations",
        data=body(),
        headers=_auth(seeds.server),
        timeout=60,
    )
    check("invocations", answer)
    assert answer.status_code == 413 and "16 MB" in answer.json()["message"], answer.text


def test_the_server_survives_with_its_data_intact(seeds: Seeds) -> None:
    """Runs last in this module: the seeded endpoint still answers and the jobs are all still there."""
    url, headers = seeds.server.url, _auth(seeds.server)
    _wait_until_deployed(seeds.server)
    answer = requests.post(
        f"{url}/serving-endpoints/{ENDPOINT}/invocations",
        json={"dataframe_records": [{"x": 2.0}]},
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["outputs"] == [{"x": 2.0, "x2": 4.0}], answer.text
    for job_id in (seeds.run_job, seeds.edit_job):
        assert requests.get(f"{url}{JOBS}/get", params={"job_id": job_id}, headers=headers, timeout=30).ok
    runs = requests.get(
        f"{url}{JOBS}/runs/list", params={"job_id": seeds.run_job}, headers=headers, timeout=30
    )
    assert runs.ok and all(r["state"]["life_cycle_state"] != "RUNNING" for r in runs.json()["runs"])
