"""Unity Catalog three-level names, validated before they touch a path."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class UCName:
    """``catalog.schema.name`` with every part checked."""

    catalog: str
    schema: str
    name: str

    @property
    def full(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.name}"

    def __str__(self) -> str:
        return self.full


def parse_uc_name(full_name: object, what: str = "table") -> UCName:
    """Split and validate a ``catalog.schema.name`` string; raise ``ValueError`` naming the bad part."""
    if not isinstance(full_name, str):
        raise ValueError(
            f"{what} name must be a string 'catalog.schema.name', got {type(full_name).__name__}"
        )
    parts = full_name.split(".")
    if len(parts) != 3:
        raise ValueError(f"{what} name {full_name!r} must have three parts: 'catalog.schema.name'")
    for label, part in zip(("catalog", "schema", what), parts):
        if not _PART.match(part):
            raise ValueError(
                f"{label} {part!r} in {what} name {full_name!r} is not valid: use letters, digits and "
                "underscores, starting with a letter or underscore (at most 128 characters)"
            )
    return UCName(*parts)


def validate_identifier(value: object, what: str) -> str:
    """Validate one simple identifier (an endpoint or column name, for instance)."""
    if not isinstance(value, str) or not _PART.match(value):
        raise ValueError(
            f"{what} {value!r} is not valid: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 128 characters)"
        )
    return value
