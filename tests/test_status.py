"""``mlra status``: where everything lives and stands, as text and as one JSON line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlra.promotion import approve, promote, run_gates, status
from tests.registry_helpers import (
    make_registry,
    params_file,
    policy,
    register,
    run_cli,
    store,
    template_db,
)

__all__ = ["store", "template_db"]  # fixtures used by name


def test_status_reports_aliases_waiting_versions_and_the_trail(
    store: dict[str, Any], tmp_path: Path
) -> None:
    registry = make_registry(store)
    register(registry, tmp_path, 0.55)
    run_gates(registry, "1", policy())
    approve(registry, "1", "Ada", "ok")
    promote(registry, "1", policy(), "ops")
    register(registry, tmp_path, 0.6, 0.55, seed=2)
    run_gates(registry, "2", policy())
    info = status(registry)
    assert info["champion"] == "1" and info["challenger"] == "2"
    assert info["awaiting_approval"] == ["2"]
    assert info["last_run"]["status"] == "FINISHED"
    assert info["audit"] == {
        "path": str(store["trail"]),
        "intact": True,
        "records": len(registry.trail.records()),
        "exists": True,
        "findings": [],
        "reason": None,
    }
    assert info["standing"] == {"1": "promoted (served as champion)", "2": "awaiting approval"}

    # the command: text, then one JSON line with the agreed keys; a cut trail fails it
    params = params_file(tmp_path / "params.yaml")
    result = run_cli(["status", "--json", "--params", str(params)])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.splitlines()[-1])
    assert {"tracking_uri", "model", "champion", "challenger", "audit"} <= set(data)
    assert (data["champion"], data["challenger"], data["model"]) == ("1", "2", registry.model)
    assert "champion:" in result.stdout and "v1" in result.stdout
    # every version with its standing, the decided ones too
    assert "awaiting approval" in result.stdout and "promoted (served as champion)" in result.stdout
    lines = store["trail"].read_text().splitlines(keepends=True)
    store["trail"].write_text("".join(lines[:-1]))
    result = run_cli(["status", "--json", "--params", str(params)])
    assert (
        result.returncode == 1
        and json.loads(result.stdout.splitlines()[-1])["audit"]["intact"] is False
    )


def test_status_of_a_fresh_project_creates_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    from mlra.audit import open_trail
    from mlra.registry import Registry

    db = tmp_path / "none" / "mlruns.db"
    info = status(Registry(f"sqlite:///{db}", trail=open_trail(tmp_path / "audit.jsonl")))
    assert info["champion"] is None and info["registry_exists"] is False
    assert info["audit"]["intact"] and info["audit"]["records"] == 0
    assert not db.exists()
