"""The registry and promotion against the MLflow tracking server over HTTP (Postgres store, proxied
artifacts) with the audit trail in Postgres: the whole life of a version (and `mlra status` /
`mlra audit verify` pointed at the servers). Concurrent promotions from real processes are tested
on one SQLite store in tests/test_promotion.py (the registry lock is the same either way)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlra.promotion import approve, promote, rollback, run_gates
from tests.registry_helpers import make_registry, policy, register
from tests.services.conftest import REPO, Services

pytestmark = pytest.mark.services


def champion_v1(registry: Any, tmp: Path) -> None:
    register(registry, tmp, 0.55)
    assert run_gates(registry, "1", policy()).passed
    approve(registry, "1", "Ada Lovelace", "first adapter; golden set reviewed")
    promote(registry, "1", policy(), "ops")


def test_a_version_lives_its_whole_life_on_the_server(
    services: Services, project: dict[str, Any], tmp_path: Path
) -> None:
    registry = make_registry(project, model=project["model"])
    registry.experiment = project["experiment"]
    champion_v1(registry, tmp_path)

    mv = registry.version(1)
    # artifacts go through the server's proxy into its store, not to a path on this machine
    assert mv.source.startswith("mlflow-artifacts:/"), mv.source
    stored = list((services.dir / "mlartifacts").rglob("adapter_model.safetensors"))
    assert any(mv.run_id in str(p) for p in stored)
    assert not (project["home"] / "mlartifacts").exists() and not Path("mlruns").exists()
    assert registry.alias("champion") == "1"  # a str over HTTP

    v2 = register(registry, tmp_path, 0.6, 0.55, seed=2)
    assert registry.tags(v2)["mlra.parent_version"] == "1"
    assert run_gates(registry, v2, policy()).passed and registry.alias("challenger") == v2
    fetched = registry.fetch(v2, tmp_path / "fetched")  # downloaded over HTTP and verified
    assert fetched.audit_checked
    approve(registry, v2, "Grace Hopper", "+5 points on the golden set")
    move = promote(registry, v2, policy(), "ops")
    assert (move.version, move.previous) == (v2, "1")
    back = rollback(registry, "oncall", "latency regression")
    assert (back.version, back.previous) == ("1", v2) and registry.alias("champion") == "1"

    # the trail lives in Postgres, and the registry's anchors point into it
    records = registry.trail.records()
    actions = [r.action for r in records]
    assert actions.count("registration") == 2 and "rollback" in actions
    assert all(r.subject["registry"] == services.mlflow for r in records)
    result = registry.trail.verify(registry.anchors())
    assert result.intact and len(registry.anchors()) >= 5, result

    # `mlra status` and `mlra audit verify`, pointed at the servers by the environment only
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["registry"] = {"model_name": project["model"], "experiment": project["experiment"]}
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    env = project["env"]  # MLFLOW_TRACKING_URI = the server, MLRA_AUDIT = the Postgres trail

    status = _cli(["status", "--json", "--params", str(params_path)], env)
    assert status.returncode == 0, status.stdout + status.stderr
    info = json.loads(status.stdout.splitlines()[-1])
    assert info["tracking_uri"] == services.mlflow and info["champion"] == "1"
    assert info["versions"] == 2 and info["challenger"] is None
    assert info["audit"]["intact"] and info["audit"]["findings"] == [], info["audit"]
    assert "***" in info["audit"]["path"] and env["MLRA_AUDIT"] not in status.stdout
    assert info["lock"]["shared"] is False  # a remote store: the lock covers this machine only

    # the newest record deleted in Postgres: only the registry's anchors can tell
    conn = services.connect(project["trail"].rsplit("/", 1)[1])
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM mlra_audit WHERE seq = (SELECT max(seq) FROM mlra_audit)")
    conn.close()
    verify = _cli(["audit", "verify", "--json"], env)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    verdict = json.loads(verify.stdout.splitlines()[-1])
    assert "is missing" in verdict["reason"] and verdict["anchors"] >= 3


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlra.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=180,
    )
