"""A real local workspace server on its own state directory, as the contract tests reach it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from databricks.sdk import WorkspaceClient

from helpers.local.server.process import ServerInfo, read_info


@dataclass(frozen=True)
class Workspace:
    """The server of ``state_dir`` (started by the test's fixture) and clients for it."""

    state_dir: Path

    @property
    def server(self) -> ServerInfo:
        info = read_info(self.state_dir)
        assert info is not None, f"no server runs for {self.state_dir}"
        return info

    def client(self, token: str | None = None) -> WorkspaceClient:
        return WorkspaceClient(host=self.server.url, token=token or self.server.token, auth_type="pat")
