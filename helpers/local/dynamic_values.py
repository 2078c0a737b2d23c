"""Databricks dynamic value references (``{{job.run_id}}``, ``{{job.start_time.iso_date}}``, ...).

A job run replaces each reference inside job parameter defaults and task parameters with a string, also
mid-string (``"run_{{job.run_id}}"``). As on Databricks: the contents are looked up, never evaluated; a
syntax error (a missing brace, an unparsable name) or a reference outside the known namespaces stays
literal text; a reference inside a known namespace that names nothing is an error (:class:`UnknownReference`).
Identifiers with special characters are quoted with backticks: ``{{job.parameters.`my-param`}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

KNOWN_NAMESPACES = frozenset({"job", "task", "tasks", "workspace"})
# Documented by Databricks, not produced by the local runner: say so instead of "unknown".
_UNSUPPORTED = (("job", "trigger"), ("tasks", None, "values"))

_REFERENCE = re.compile(r"\{\{([^{}]*)\}\}")
_PART = re.compile(r"\s*(?:([A-Za-z0-9_]+)|`([^`]+)`)\s*")


class UnknownReference(ValueError):
    """A reference in a known namespace that names no value."""


@dataclass(frozen=True)
class RunContext:
    """What a task run knows about itself; :meth:`values` turns it into the reference table."""

    job_id: int
    job_name: str
    run_id: int
    start_time_ms: int
    workspace_id: int
    workspace_url: str = ""
    repair_count: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict)
    task_key: str | None = None
    task_run_id: int | None = None
    notebook_path: str | None = None
    # Other tasks of the same run that already have a run id (and maybe a result state).
    tasks: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def values(self) -> dict[tuple[str, ...], str]:
        table: dict[tuple[str, ...], str] = {
            ("job", "id"): str(self.job_id),
            ("job", "name"): self.job_name,
            ("job", "run_id"): str(self.run_id),
            ("job", "repair_count"): str(self.repair_count),
            ("workspace", "id"): str(self.workspace_id),
        }
        if self.workspace_url:
            table["workspace", "url"] = self.workspace_url
        for argument, value in time_arguments(self.start_time_ms).items():
            table["job", "start_time", argument] = value
        for name, value in self.parameters.items():
            table["job", "parameters", name] = value
        if self.task_key is not None:
            table["task", "name"] = self.task_key
            table["task", "execution_count"] = "1"
            if self.task_run_id is not None:
                table["task", "run_id"] = str(self.task_run_id)
            if self.notebook_path is not None:
                table["task", "notebook_path"] = self.notebook_path
        for key, facts in self.tasks.items():
            for name, value in facts.items():
                table["tasks", key, name] = value
        return table


def time_arguments(epoch_ms: int) -> dict[str, str]:
    """The ``job.start_time.<argument>`` values, in UTC."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return {
        "iso_datetime": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "iso_date": moment.date().isoformat(),
        "iso_weekday": str(moment.isoweekday()),
        "is_weekday": "true" if moment.isoweekday() <= 5 else "false",
        "timestamp_ms": str(epoch_ms),
        "year": str(moment.year),
        "month": str(moment.month),
        "day": str(moment.day),
        "hour": str(moment.hour),
        "minute": str(moment.minute),
        "second": str(moment.second),
    }


def parse_reference(content: str) -> tuple[str, ...] | None:
    """``"job.parameters.`a b`"`` -> ``("job", "parameters", "a b")``; ``None`` when it is not a name."""
    parts: list[str] = []
    for piece in _split_dots(content):
        match = _PART.fullmatch(piece)
        if not match:
            return None
        parts.append(match.group(1) or match.group(2))
    return tuple(parts) if parts else None


def _split_dots(content: str) -> list[str]:
    pieces, current, quoted = [], "", False
    for char in content:
        if char == "`":
            quoted = not quoted
        if char == "." and not quoted:
            pieces.append(current)
            current = ""
        else:
            current += char
    pieces.append(current)
    return pieces


def substitute(text: str, values: Mapping[tuple[str, ...], str], where: str = "") -> str:
    """Replace every resolvable reference in ``text``; raise :class:`UnknownReference` for a bad one."""

    def replace(match: re.Match[str]) -> str:
        path = parse_reference(match.group(1))
        if path is None or path[0] not in KNOWN_NAMESPACES:
            return match.group(0)
        if path in values:
            return values[path]
        raise UnknownReference(_explain(match.group(0), path, where))

    return _REFERENCE.sub(replace, text)


def substitute_all(
    mapping: Mapping[str, str], values: Mapping[tuple[str, ...], str], where: str
) -> dict[str, str]:
    return {name: substitute(value, values, f"{where} {name!r}") for name, value in mapping.items()}


def _explain(reference: str, path: tuple[str, ...], where: str) -> str:
    place = f" in {where}" if where else ""
    for pattern in _UNSUPPORTED:
        if len(path) >= len(pattern) and all(
            p is None or p == q for p, q in zip(pattern, path, strict=False)
        ):
            return f"Dynamic value reference {reference}{place} is not supported by the local job runner."
    if path[:2] == ("job", "parameters"):
        return f"Dynamic value reference {reference}{place} names no job parameter of this job."
    return f"Invalid dynamic value reference {reference}{place}: {'.'.join(path)!r} is not a known reference."
