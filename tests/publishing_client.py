"""The publishing half of the local feature client on its own, for tests of publish_table and its sync."""

from __future__ import annotations

from pathlib import Path

from helpers.local.functions import FunctionRegistry
from helpers.local.publishing import OnlinePublishingMixin
from helpers.local.tables import DeltaTables


class PublishingClient(OnlinePublishingMixin):
    """Delta tables, UC functions and the online store of ``state_dir``, without the rest of the client."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._tables = DeltaTables(state_dir)
        self._functions = FunctionRegistry(state_dir)
