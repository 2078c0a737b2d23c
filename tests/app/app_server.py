"""Point the app's environment at a local workspace server (``from app_server import use_server``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient


def use_server(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> WorkspaceClient:
    """Start the local workspace server of ``state_dir`` and point the app's environment at it."""
    import streamlit as st

    from dashboard.config import workspace_client
    from helpers.local.server.process import ensure_server

    info = ensure_server(state_dir)
    for name in ("DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", info.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", info.token)
    workspace_client.cache_clear()
    st.cache_data.clear()
    return WorkspaceClient(host=info.url, token=info.token, auth_type="pat")
