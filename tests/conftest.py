"""Shared fixtures: every test gets its own state directory, so nothing touches .workspace/."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import fresh_state
import pytest


@pytest.fixture(scope="session", autouse=True)
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where the session's migrated empty MLflow database goes; :func:`fresh_state.seed` copies it."""
    fresh_state.use_directory(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = fresh_state.seed(tmp_path / "state")
    monkeypatch.setenv("HELPERS_STATE_DIR", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def nothing_written_to_the_working_directory() -> Iterator[None]:
    """Every test keeps its state in a temporary directory: MLflow must never fall back to ./mlflow.db."""
    stray = Path.cwd() / "mlflow.db"
    existed = stray.exists()
    yield
    assert existed or not stray.exists(), f"a test wrote {stray}; point MLflow at the test's state dir"


@pytest.fixture(scope="session", autouse=True)
def online_stores_start_at_once() -> Iterator[None]:
    """A new online store is STARTING for a few seconds, as on Databricks; only tests of that wait for it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HELPERS_ONLINE_STORE_START_SECONDS", "0")
        yield


@pytest.fixture(scope="session", autouse=True)
def sdk_waiters_poll_briskly() -> Iterator[None]:
    """The SDK's waiters (``create_and_wait``, ``run_now(...).result()``) sleep 1 s, 2 s, 3 s, ... between
    polls, made for minutes-long Databricks operations; in tests they poll every 0.05 s. What they poll for,
    and their deadlines, are unchanged."""
    from databricks.sdk.service import jobs, serving

    brisk = SimpleNamespace(time=time.time, sleep=lambda seconds: time.sleep(min(seconds, 0.05)))
    with pytest.MonkeyPatch.context() as patch:
        for module in (jobs, serving):
            patch.setattr(module, "time", brisk)
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked ``long`` (notebook chains: a minute or more each) run first. ``make test`` spreads
    modules over one worker per core (pytest-xdist, ``--dist loadfile``) in this order, so the long ones
    start at once instead of finishing the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable: the rest keep their order


# What ``platform.settings()`` and the local MLflow set-up export for child processes (kernels, servers).
EXPORTED = ("HELPERS_STATE_DIR", "MLFLOW_TRACKING_URI")


def _exported() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in EXPORTED}


def _forget_current_settings(exported: dict[str, str | None]) -> None:
    from helpers import platform

    platform._current = None
    for name, value in exported.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module", autouse=True)
def settings_stay_in_their_module() -> Iterator[None]:
    """``platform.settings()`` remembers the settings it made and exports their state dir (and MLflow its
    store), as a notebook needs; in the test process that must not leak into the next module (a worker runs
    many)."""
    before = _exported()
    _forget_current_settings(before)
    yield
    _forget_current_settings(before)


@pytest.fixture(autouse=True)
def settings_stay_in_their_test(settings_stay_in_their_module: None) -> Iterator[None]:
    """The same for each test: what a test's ``platform.settings()`` set is gone after it."""
    before = _exported()
    yield
    _forget_current_settings(before)
