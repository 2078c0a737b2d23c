"""Python functions registered under Unity Catalog names: the twin of ``CREATE FUNCTION ... LANGUAGE PYTHON``.

A function is stored as its parameter list, return type and body text, exactly what the SQL statement
carries, and compiled into a Python function on first use.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from helpers.names import parse_uc_name, validate_identifier

SQL_TYPES = {"DOUBLE", "FLOAT", "INT", "BIGINT", "STRING", "BOOLEAN", "LONG", "TIMESTAMP"}


@dataclass(frozen=True)
class PythonFunction:
    name: str
    params: dict[str, str]
    returns: str
    body: str

    def create_sql(self) -> str:
        """The Databricks SQL statement that defines the same function."""
        args = ", ".join(f"{p} {t}" for p, t in self.params.items())
        return (
            f"CREATE OR REPLACE FUNCTION {self.name}({args})\nRETURNS {self.returns}\nLANGUAGE PYTHON\n"
            f"AS $$\n{textwrap.dedent(self.body).strip()}\n$$"
        )

    def compile(self) -> Callable[..., Any]:
        source = f"def _udf({', '.join(self.params)}):\n" + textwrap.indent(
            textwrap.dedent(self.body).strip(), "    "
        )
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<function {self.name}>", "exec"), namespace)  # noqa: S102 - UC runs it too
        return namespace["_udf"]


class FunctionRegistry:
    """Functions under ``<state_dir>/functions/<catalog>/<schema>/<name>.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "functions"
        self._compiled: dict[str, tuple[float, Callable[..., Any]]] = {}

    def _path(self, name: str) -> Path:
        uc = parse_uc_name(name, "function")
        return self.root / uc.catalog / uc.schema / f"{uc.name}.json"

    def create(self, name: str, params: dict[str, str], returns: str, body: str) -> PythonFunction:
        for param, sql_type in {**params, "<return>": returns}.items():
            if param != "<return>":
                validate_identifier(param, "function parameter")
            if sql_type.upper() not in SQL_TYPES:
                raise ValueError(f"type {sql_type!r} of {param} is not one of {sorted(SQL_TYPES)}")
        fn = PythonFunction(name, dict(params), returns.upper(), textwrap.dedent(body).strip())
        fn.compile()  # a syntax error surfaces now, not at serving time
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(fn), indent=2))
        tmp.replace(path)
        self._compiled.pop(name, None)
        return fn

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not path.exists():
            raise LookupError(f"function {name} does not exist")
        path.unlink()
        self._compiled.pop(name, None)

    def get(self, name: str) -> PythonFunction:
        path = self._path(name)
        if not path.exists():
            raise LookupError(f"function {name} does not exist; create it first")
        return PythonFunction(**json.loads(path.read_text()))

    def callable(self, name: str) -> Callable[..., Any]:
        """The compiled function, cached until its definition file changes."""
        # Called per request: one name check and one stat, not two of each.
        path = self._path(name)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            mtime = -1.0  # self.get below raises the clear "does not exist" error
        cached = self._compiled.get(name)
        if cached is None or cached[0] != mtime:
            cached = (mtime, self.get(name).compile())
            self._compiled[name] = cached
        return cached[1]
