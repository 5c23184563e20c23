"""Fixtures of the flow tests: one real temporary Prefect server for the session, and a project
folder per test (its own params.yaml, data folders, MLflow SQLite store and audit trail)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's test harness: a real Prefect API server on a temporary database."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> Path:
    """An empty project folder as the working directory, with its own local state."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLRA_HOME", str(tmp_path / ".mlra"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLRA_AUDIT", raising=False)
    return tmp_path
