"""Dashboard tests: the app's own modules (``app/dashboard``) import as they do under ``streamlit run``."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from helpers.config import PROJECT_ROOT

APP_DIR = PROJECT_ROOT / "app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


@pytest.fixture(scope="module")
def module_patch() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()
