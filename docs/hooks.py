"""MkDocs hook: the notebook pages of the course come from executed notebooks, never from ``notebooks/``.

The committed notebooks carry no outputs. ``make run`` writes executed copies to ``.workspace/executed/``
(``DOCS_NOTEBOOKS_DIR`` points elsewhere); every ``notebooks/<path>.ipynb`` named in the nav is served
from ``<that dir>/<path>.ipynb``. Job runs, not ``make run``, execute the job notebook: when the dir has no
copy of it, the newest job run that executed it without error (``<state dir>/jobs/runs/*/``) supplies it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority, get_plugin_logger
from mkdocs.structure.files import File, Files

NOTEBOOKS_ENV = "DOCS_NOTEBOOKS_DIR"
DEFAULT_NOTEBOOKS_DIR = ".workspace/executed"
PAGES_PREFIX = "notebooks/"  # nav entries under this prefix are executed notebooks
JOB_RUNS = Path("jobs") / "runs"
_staging: list[Path] = []  # the current build's copies; mkdocs-jupyter needs real files under a src_dir

log = get_plugin_logger("executed-notebooks")


def nav_notebooks(nav: Any) -> Iterator[str]:
    """Every ``notebooks/...ipynb`` source path named in the nav, depth first."""
    if isinstance(nav, str):
        if nav.startswith(PAGES_PREFIX) and nav.endswith(".ipynb"):
            yield nav
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_notebooks(value)
    elif isinstance(nav, list):
        for item in nav:
            yield from nav_notebooks(item)


def notebooks_dir(config: MkDocsConfig) -> Path:
    """The executed-notebooks dir: ``DOCS_NOTEBOOKS_DIR``, relative paths taken from the repository root."""
    root = Path(config.config_file_path).parent
    return root / os.environ.get(NOTEBOOKS_ENV, DEFAULT_NOTEBOOKS_DIR)


def failed(path: Path) -> bool:
    """True when papermill recorded that the notebook stopped on an exception."""
    metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return bool(metadata.get("papermill", {}).get("exception"))


def from_job_runs(relative: str, state_dir: Path) -> Path | None:
    """The newest job-run output of ``notebooks/<relative>`` that ran without an exception, if any."""
    wanted = ("notebooks", *Path(relative).parts)
    outputs = sorted((state_dir / JOB_RUNS).glob("*/*.ipynb"), key=lambda p: p.stat().st_mtime, reverse=True)
    for output in outputs:
        metadata = json.loads(output.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
        source = Path(str(metadata.get("input_path", ""))).parts
        if source[-len(wanted) :] == wanted and not metadata.get("exception"):
            return output
    return None


def executed_notebook(relative: str, directory: Path) -> Path:
    """Where the executed copy of ``notebooks/<relative>`` is; PluginError saying what to run when missing."""
    path = directory / relative
    if path.is_file():
        return path
    if relative.startswith("jobs/"):
        from helpers.config import get_settings

        found = from_job_runs(relative, get_settings().state_dir)
        if found is not None:
            return found
    raise PluginError(
        f"No executed copy of notebooks/{relative} in {directory}. Run `make run` first (`make docs` does), "
        f"or set {NOTEBOOKS_ENV} to a folder of executed notebooks."
    )


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    directory = notebooks_dir(config)
    staging = Path(tempfile.mkdtemp(prefix="docs-notebooks-"))
    _staging.append(staging)
    for uri in nav_notebooks(config.nav):
        source = executed_notebook(uri.removeprefix(PAGES_PREFIX), directory)
        if failed(source):
            log.warning(f"{source} stopped on an error; fix the notebook and run `make run` again.")
        (staging / uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staging / uri)
        files.append(File(uri, str(staging), config.site_dir, config.use_directory_urls))
    return files


def _remove_staging() -> None:
    while _staging:
        shutil.rmtree(_staging.pop(), ignore_errors=True)


def on_post_build(config: MkDocsConfig) -> None:
    _remove_staging()


def on_build_error(error: Exception) -> None:
    _remove_staging()
