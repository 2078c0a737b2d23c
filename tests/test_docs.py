"""The course site: `mkdocs build --strict` builds every nav page, and every internal link resolves.

The build gets the committed (output-free) notebooks as its "executed" notebooks, so the test executes
nothing; `make docs` feeds it the notebooks `make run` executed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

import pytest
from mkdocs.exceptions import PluginError
from mkdocs.utils import yaml_load

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"
NOTEBOOKS = ROOT / "notebooks"
SERVED_NOTEBOOKS = [*sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), *sorted(NOTEBOOKS.glob("jobs/*.ipynb"))]


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


def nav() -> list:
    with CONFIG.open() as f:
        return yaml_load(f)["nav"]


def nav_sources(entry: object) -> list[str]:
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, dict):
        return [s for value in entry.values() for s in nav_sources(value)]
    if isinstance(entry, list):
        return [s for item in entry for s in nav_sources(item)]
    return []


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.targets += [value for name, value in attrs if name in ("href", "src") and value]


def broken_links(site: Path) -> list[str]:
    """Every href/src inside the site (no scheme, no host) whose file is missing, as 'page -> target'."""
    broken = []
    for page in sorted(site.rglob("*.html")):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for target in parser.targets:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or not parts.path:
                continue  # external, data: URI, or an anchor on the same page
            path = unquote(parts.path)
            resolved = site / path.lstrip("/") if path.startswith("/") else page.parent / path
            if resolved.is_dir():
                resolved = resolved / "index.html"
            if not resolved.is_file():
                broken.append(f"{page.relative_to(site)} -> {target}")
    return broken


def build(executed: Path, site: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCS_NOTEBOOKS_DIR": str(executed), "DOCS_CACHE_DIR": str(cache),
           "NO_MKDOCS_2_WARNING": "1"}  # fmt: skip
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(CONFIG),
               "--site-dir", str(site)]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("docs")
    executed = work / "executed"
    for notebook in SERVED_NOTEBOOKS:
        target = executed / notebook.relative_to(NOTEBOOKS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, target)
    result = build(executed, work / "site", work / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "site"


def test_every_nav_page_is_built(site: Path) -> None:
    sources = nav_sources(nav())
    assert len(sources) >= 18
    missing = [s for s in sources if not (site / Path(s).with_suffix(".html")).is_file()]
    assert not missing


def test_every_served_notebook_has_a_page() -> None:
    in_nav = set(nav_sources(nav()))
    pages = [f"notebooks/{n.relative_to(NOTEBOOKS).as_posix()}" for n in SERVED_NOTEBOOKS]
    missing = [page for page in pages if page not in in_nav]
    assert len(SERVED_NOTEBOOKS) >= 9
    assert not missing, f"notebooks without a page in mkdocs.yml's nav: {missing}"


def test_notebook_pages_render_the_notebook_and_offer_it_for_download(site: Path) -> None:
    page = (site / "notebooks" / "05_async_3_client.html").read_text(encoding="utf-8")
    assert "jupyter-wrapper" in page and "run_now" in page
    assert (site / "notebooks" / "05_async_3_client.ipynb").is_file()


def test_every_internal_link_resolves(site: Path) -> None:
    assert not broken_links(site)


def test_the_link_check_reports_a_missing_target(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "here.png").write_bytes(b"")
    (tmp_path / "sub" / "page.html").write_text(
        '<a href="../here.png">ok</a> <a href="#top">ok</a> <a href="https://example.org/x">ok</a>'
        '<img src="data:image/png;base64,AA=="> <a href="../gone.html#part">broken</a>'
    )
    assert broken_links(tmp_path) == ["sub/page.html -> ../gone.html#part"]


def test_a_nav_notebook_that_was_not_executed_fails_with_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"notebooks/07_monitoring_inference_tables.ipynb.*make run"):
        hooks.executed_notebook("07_monitoring_inference_tables.ipynb", tmp_path)


def _job_output(path: Path, input_path: str, exception: bool | None, mtime: int) -> Path:
    path.parent.mkdir(parents=True)
    metadata = {"papermill": {"input_path": input_path, "exception": exception}}
    path.write_text(json.dumps({"cells": [], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}))
    os.utime(path, (mtime, mtime))
    return path


def test_a_notebook_that_stopped_on_an_error_is_recognised(tmp_path: Path) -> None:
    ok = _job_output(tmp_path / "ok" / "nb.ipynb", "/repo/notebooks/00.ipynb", None, 1_000)
    stopped = _job_output(tmp_path / "stopped" / "nb.ipynb", "/repo/notebooks/00.ipynb", True, 1_000)
    committed = NOTEBOOKS / "00_setup_feature_tables.ipynb"  # no papermill metadata at all
    assert (hooks.failed(ok), hooks.failed(stopped), hooks.failed(committed)) == (False, True, False)


def test_the_job_notebook_comes_from_the_newest_job_run_that_succeeded(tmp_path: Path) -> None:
    job = "/repo/notebooks/jobs/shelf_layout_optimization.ipynb"
    runs = tmp_path / "jobs" / "runs"
    good = _job_output(runs / "7" / "optimize.ipynb", job, None, 1_000)
    _job_output(runs / "8" / "optimize.ipynb", job, True, 2_000)  # failed: not shown
    _job_output(runs / "9" / "other.ipynb", "/repo/notebooks/jobs/other.ipynb", None, 3_000)
    assert hooks.from_job_runs("jobs/shelf_layout_optimization.ipynb", tmp_path) == good
    assert hooks.from_job_runs("jobs/missing.ipynb", tmp_path) is None
