"""The notebook's side of a local job run: its parameters in, its exit value out.

The local job runner executes a task's notebook with papermill and tells the kernel, through environment
variables, where two files are: the run's parameters (JSON object of strings) and where to write the exit
value. These functions are the local twins of ``dbutils.widgets.get`` and ``dbutils.notebook.exit``.

Difference from Databricks: :func:`exit_notebook` records the value but does not stop the notebook; put it
in the last cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

EXIT_FILE_ENV = "HELPERS_NOTEBOOK_EXIT_FILE"
PARAMETERS_FILE_ENV = "HELPERS_JOB_PARAMETERS_FILE"


def job_parameters(**defaults: Any) -> dict[str, Any]:
    """The job run's parameters over ``defaults``; outside a job run, the defaults.

    Job parameters are strings; a value whose default is an ``int``, ``float`` or ``bool`` is converted
    to that type (``coerce_like``), so ``job_parameters(top_k=5)["top_k"]`` is an int in both places.
    """
    given: dict[str, str] = {}
    path = os.environ.get(PARAMETERS_FILE_ENV)
    if path:
        given = json.loads(Path(path).read_text())
    values: dict[str, Any] = dict(defaults)
    for name, raw in given.items():
        values[name] = coerce_like(defaults[name], raw, name) if name in defaults else raw
    return values


def coerce_like(default: Any, raw: str, name: str = "value") -> Any:
    """Convert the string ``raw`` to the type of ``default`` (bool, int, float; anything else stays str)."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError(raw)
            return lowered == "true"
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(
            f"job parameter {name!r} must be a {type(default).__name__} like its default {default!r}, "
            f"got {raw!r}"
        ) from None
    return raw


def exit_notebook(value: str) -> None:
    """Record ``value`` as the run's notebook output (``runs/get-output`` -> ``notebook_output.result``).

    Outside a job run (an interactive session) there is nowhere to record it and nothing happens.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"exit value must be a str (serialise it, e.g. json.dumps), got {type(value).__name__}"
        )
    path = os.environ.get(EXIT_FILE_ENV)
    if path:
        Path(path).write_text(value, encoding="utf-8")
