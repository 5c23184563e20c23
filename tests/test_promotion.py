"""Gates, challenger, approval, promotion, rollback, concurrent promotions and audit-trail
tampering, against a real MLflow SQLite store and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlra.errors import ConfigError, PromotionRefused
from mlra.promotion import (
    AUTOMATIC,
    approve,
    awaiting_approval,
    evaluate_gates,
    promote,
    reject,
    rollback,
    run_gates,
)
from tests.registry_helpers import REPO, make_registry, policy, register, store, template_db

__all__ = ["store", "template_db"]  # fixtures used by name


def champion_v1(registry: Any, tmp: Path) -> None:
    """v1 registered against the base, gated, approved and promoted."""
    register(registry, tmp, 0.55)
    assert run_gates(registry, "1", policy()).passed
    approve(registry, "1", "Ada Lovelace", "first adapter; golden set reviewed")
    promote(registry, "1", policy(), "ops")


def test_gates_refuse_naming_the_gate(store: dict[str, Any], tmp_path: Path) -> None:
    registry = make_registry(store)
    champion_v1(registry, tmp_path)
    cases = {
        "overall_gain": register(registry, tmp_path, 0.555, 0.55, seed=2),
        "slice_regression": register(
            registry, tmp_path, {"apple": 0.5, "claritin": 0.7, "nfl": 0.7}, 0.55, seed=3
        ),
        "validation": register(registry, tmp_path, 0.7, 0.55, seed=4, passed=False),
    }
    for gate, version in cases.items():
        decision = run_gates(registry, version, policy())
        assert not decision.passed and decision.refused_by is not None
        assert decision.refused_by.name == gate
        assert registry.tags(version)["mlra.gate"] == f"refused:{gate}"
        with pytest.raises(PromotionRefused, match=f"gate '{gate}'"):
            promote(registry, version, policy(), "ops")
    assert registry.alias("challenger") is None
    detail = evaluate_gates(registry, cases["slice_regression"], policy()).refused_by
    assert detail is not None and "'apple'" in detail.detail and "-0.0500" in detail.detail, detail
    # small slices are reported, not gated
    lenient = evaluate_gates(registry, cases["slice_regression"], policy(min_slice_support=301))
    assert lenient.passed and "not gated" in lenient.gates[-1].detail
    assert registry.alias("champion") == "1"
    outcomes = [r.details["outcome"] for r in registry.trail.records() if r.action == "gate"]
    for gate in cases:  # each refusal is in the trail: once by run_gates, once by promote
        assert outcomes.count(f"refused:{gate}") >= 2
    gate_record = next(r for r in registry.trail.records() if r.action == "gate")
    assert gate_record.details["gates"]["registered"]["ok"] is True  # not redacted


def test_pass_challenger_approve_promote_rollback(store: dict[str, Any], tmp_path: Path) -> None:
    registry = make_registry(store)
    champion_v1(registry, tmp_path)
    v2 = register(registry, tmp_path, 0.6, 0.55, seed=2)
    with pytest.raises(PromotionRefused, match="gate 'approval'"):
        approve(registry, v2, "Ada", "not gated yet")
    decision = run_gates(registry, v2, policy())
    assert decision.passed and registry.alias("challenger") == v2
    assert awaiting_approval(registry) == [v2]
    card = registry.version(v2).description  # the reviewer sees each gate with its threshold
    assert "## Gates (record" in card and "**Status:** `challenger`" in card
    assert "- pass `overall_gain`: overall macro-F1 +0.0500 against champion v1 (minimum" in card

    with pytest.raises(PromotionRefused, match="gate 'approval': no approval"):
        promote(registry, v2, policy(), "ops")
    reason = 'golden set +5 points | "no" regressions\nsee ticket #12 — ✓'
    record = approve(registry, v2, "Grace O'Hopper", reason)
    tags = registry.tags(v2)
    assert tags["mlra.approved_by"] == "Grace O'Hopper"  # stored as given
    assert tags["mlra.approval_reason"] == reason
    assert record.details["reason"] == reason and registry.trail.verify().intact
    assert awaiting_approval(registry) == []

    move = promote(registry, v2, policy(), "ops")
    assert (move.version, move.previous, move.approver) == (v2, "1", "Grace O'Hopper")
    assert registry.alias("champion") == v2 and registry.alias("challenger") is None
    assert registry.tags(v2)["mlra.previous_champion"] == "1"
    card = registry.version(v2).description
    assert "`champion`" in card and "Grace O'Hopper" in card
    row = [line for line in card.splitlines() if "ticket #12" in line]
    assert len(row) == 1 and row[0].startswith("- ")  # the reason cannot break the list
    assert "**Grace O'Hopper** · approval: golden set +5 points" in row[0]

    back = rollback(registry, "oncall", "latency regression in prod")
    assert (back.version, back.previous) == ("1", v2)
    assert registry.alias("champion") == "1"
    assert registry.tags(v2)["mlra.rolled_back_by"] == "oncall"
    with pytest.raises(PromotionRefused, match="gate 'rollback': champion v1 has no previous"):
        rollback(registry, "oncall", "again")
    with pytest.raises(PromotionRefused, match=r"rolled back .* after its approval"):
        promote(registry, v2, policy(), "ops")

    actions = [r.action for r in registry.trail.records()]
    assert actions.count("promotion") >= 2 and actions[-1] in ("promotion", "gate")
    assert "rollback" in actions
    assert registry.trail.verify(registry.anchors()).intact


def test_reject_and_automatic_policy(store: dict[str, Any], tmp_path: Path) -> None:
    registry = make_registry(store)
    champion_v1(registry, tmp_path)
    v2 = register(registry, tmp_path, 0.6, 0.55, seed=2)
    run_gates(registry, v2, policy())
    reject(registry, v2, "Ada", "labels of batch 3 are suspect")
    assert registry.alias("challenger") is None and awaiting_approval(registry) == []
    with pytest.raises(PromotionRefused, match="gate 'approval'"):
        promote(registry, v2, policy(), "ops")
    move = promote(registry, v2, policy(approval="automatic"), "pipeline")
    assert move.approver == AUTOMATIC
    assert registry.tags(v2)["mlra.approved_by"] == AUTOMATIC
    approvals = [r for r in registry.trail.records() if r.action == "approval"]
    assert approvals[-1].actor == AUTOMATIC


def test_names_and_reasons_are_checked_not_mangled(store: dict[str, Any], tmp_path: Path) -> None:
    registry = make_registry(store)
    register(registry, tmp_path, 0.6)
    run_gates(registry, "1", policy())
    for by, reason, what in (("", "x", "--by"), ("Ada", " ", "--reason"), ("A\0", "x", "--by")):
        with pytest.raises(ConfigError, match=what):
            approve(registry, "1", by, reason)
    with pytest.raises(ConfigError, match="at most 2000"):
        approve(registry, "1", "Ada", "x" * 2001)
    with pytest.raises(ConfigError, match=r"promotion\.approval"):
        policy(approval="sometimes")


_PROMOTER = """
import sys, time
from pathlib import Path
from mlra.audit import open_trail
from mlra.errors import PromotionRefused
from mlra.promotion import PromotionParams, promote
from mlra.registry import Registry
uri, trail, version, go = sys.argv[1:5]
registry = Registry(uri, model="tweets-sentiment", trail=open_trail(trail))
policy = PromotionParams(0.01, 0.02, 50, "manual")
registry.client.get_registered_model(registry.model)  # connect before the start signal
while not Path(go).exists():
    time.sleep(0.01)
try:
    move = promote(registry, version, policy, f"proc-{version}")
    print("PROMOTED", move.version, move.previous)
except PromotionRefused as exc:
    print("REFUSED", exc)
"""


def test_concurrent_promotions_leave_one_champion_and_a_consistent_trail(
    store: dict[str, Any], tmp_path: Path
) -> None:
    registry = make_registry(store)
    champion_v1(registry, tmp_path)
    candidates = [register(registry, tmp_path, 0.6 + i / 100, 0.55, seed=10 + i) for i in range(2)]
    for v in candidates:
        assert run_gates(registry, v, policy()).passed
        approve(registry, v, "Ada", "both good")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROMOTER, store["uri"], str(store["trail"]), v, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for v in [*candidates, candidates[0]]
    ]
    time.sleep(1.0)
    go.touch()
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    lines = [out.strip().splitlines()[-1] for out, _ in outputs]
    promoted = [line for line in lines if line.startswith("PROMOTED")]
    assert len(promoted) == 1, lines  # the others see the champion moved, or already there
    _, winner, previous = promoted[0].split()
    assert previous == "1" and registry.alias("champion") == winner
    assert registry.tags(winner)["mlra.previous_champion"] == "1"

    records = registry.trail.records()
    moves = [r for r in records if r.action == "promotion" and r.details["outcome"] == "done"]
    chain = [("1", "none")] + [(r.subject["version"], r.details["previous"]) for r in moves[1:]]
    assert chain == [("1", "none"), (winner, "1")]
    assert registry.trail.verify(registry.anchors()).intact
    # records of the three processes never interleave inside one promotion
    seqs = [r.seq for r in records]
    assert seqs == list(range(len(records)))


def test_audit_verify_catches_each_kind_of_tampering(store: dict[str, Any], tmp_path: Path) -> None:
    registry = make_registry(store)
    champion_v1(registry, tmp_path)
    path: Path = store["trail"]
    original = path.read_text().splitlines(keepends=True)
    anchors = registry.anchors()
    assert len(original) >= 5 and registry.trail.verify(anchors).intact

    def broken(lines: list[str]) -> str:
        path.write_text("".join(lines))
        result = registry.trail.verify(anchors)
        path.write_text("".join(original))
        assert not result.intact
        return result.reason

    edited = json.loads(original[2])
    edited["actor"] = "mallory"
    assert "does not match its hash" in broken(
        [*original[:2], json.dumps(edited) + "\n", *original[3:]]
    )
    assert "seq" in broken([*original[:2], *original[3:]])  # a deleted record
    assert "seq" in broken([original[0], original[2], original[1], *original[3:]])  # reordered
    assert "is missing" in broken(original[:-1])  # cut off the end: only the anchors see it
    assert "seq" in broken([*original[:2], original[1], *original[2:]])  # a record inserted

    # `mlra audit verify` uses the registry's anchors too
    path.write_text("".join(original[:-1]))
    result = subprocess.run(
        [sys.executable, "-m", "mlra.cli", "audit", "verify", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout, result.stderr
    assert "is missing" in json.loads(result.stdout.splitlines()[-1])["reason"]
