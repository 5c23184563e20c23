"""Modules governed one by one, and the bundle record: which modules are due, each module's own
registered model, promotion and rollback of one module, "what served on date D", and a bundle
record that no longer matches the champions reported as a finding. A real MLflow SQLite store, a
real audit trail and real (tiny) adapter artifacts."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from mlra import modules
from mlra.audit import open_trail
from mlra.errors import ConfigError
from mlra.promotion import promote, rollback, run_gates
from tests.data.synthetic import replace, small_params
from tests.registry_helpers import policy, register, run_cli, store, template_db

__all__ = ["store", "template_db"]

AUTO = policy(approval="automatic")


def _params(tmp: Path, **sections: dict[str, Any]) -> Any:
    section = {"mode": "modular", "min_new_rows": 10} | sections.pop("modules", {})
    return small_params(
        tmp,
        registry={"model_name": "tweets", "experiment": "mlra-test"},
        modules=section,
        **sections,
    )


def _training(
    trail: Any, params: Any, module: str, rows: int, params_hash: str | None = None
) -> None:
    """The record a modular training pass leaves for ``module`` (mlra.steps.train_modules)."""
    trail.append(
        "trainer",
        "training",
        {"model": modules.model_name(params, module), "module": module, "adapter_sha256": "0" * 64},
        {
            "params_hash": params_hash or modules.module_params_hash(params, module),
            "domain_feedback_rows": rows,
        },
    )


def test_modules_are_due_by_their_own_domain(tmp_path: Path) -> None:
    params = _params(tmp_path)
    trail = open_trail(tmp_path / "audit.jsonl")
    names = params.modules.names(params.data)
    assert names == params.data.target_domains  # one module per target domain by default

    first = modules.modules_due(params, {}, trail)
    assert all(v.due and v.reason == "never trained" for v in first)

    for m in names:
        _training(trail, params, m, rows=5)
    feedback = {m: 5 for m in names} | {"nfl": 15, "apple": 14}  # nfl +10, apple +9
    verdicts = {v.module: v for v in modules.modules_due(params, feedback, trail)}
    assert verdicts["nfl"].due and verdicts["nfl"].new_rows == 10
    assert (
        not verdicts["apple"].due
        and "9 new feedback rows, fewer than 10" in verdicts["apple"].reason
    )
    assert not verdicts["claritin"].due

    # a module whose adapter spec changed retrains; the others do not
    changed = replace(params, "modules", overrides=(_override("claritin", rank=4),))
    verdicts = {v.module: v for v in modules.modules_due(changed, feedback, trail)}
    assert verdicts["claritin"].due and verdicts["claritin"].reason == "its parameters changed"
    assert not verdicts["coachella"].due


def _override(module: str, **values: Any) -> Any:
    from mlra.config import ModuleOverride

    return ModuleOverride(module=module, **values)


def test_bad_module_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"modules.domains.*'tennis'"):
        _params(tmp_path, modules={"domains": ["tennis"]})
    with pytest.raises(ConfigError, match=r"modules.router.fallback.*'nope'"):
        _params(tmp_path, modules={"router": {"fallback": "nope"}})
    with pytest.raises(ConfigError, match="unknown module 'tennis'"):
        modules.model_name(_params(tmp_path), "tennis")


def _champion(params: Any, module: str, tmp: Path, f1: float, seed: int) -> str:
    registry = modules.registry_for(params, module)
    champion = registry.state().champion
    base = None
    if champion is not None:
        base = f1 - 0.05
    version = register(registry, tmp, f1, base, seed=seed)
    assert run_gates(registry, version, AUTO).passed
    promote(registry, version, AUTO, "ops")
    return version


def test_each_module_is_its_own_model_and_the_bundle_says_what_served(
    store: dict[str, Any], tmp_path: Path
) -> None:
    params = _params(tmp_path, modules={"mode": "modular", "domains": ["nfl", "apple"]})
    assert params.modules.names(params.data) == ("nfl", "apple")
    trail = open_trail(store["trail"])
    _champion(params, "nfl", tmp_path, 0.55, seed=1)
    _champion(params, "apple", tmp_path, 0.55, seed=2)
    first = modules.record_bundle(params, "ops", "first bundle")
    assert first.number == 1 and first.versions() == {"nfl": "1", "apple": "1"}
    assert first.modules["nfl"]["model"] == "tweets.nfl"
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.01)

    # a second nfl version: its own model's v2; apple is untouched
    assert _champion(params, "nfl", tmp_path, 0.65, seed=3) == "2"
    apple = modules.registry_for(params, "apple").state()
    assert apple.champion == "1" and len(apple.versions) == 1
    second = modules.record_bundle(params, "ops", "nfl v2")
    assert second.versions() == {"nfl": "2", "apple": "1"}
    records = trail.records()
    assert modules.bundle_at(records, "tweets", between) == first  # what served then
    assert modules.bundle_at(records, "tweets") == second
    assert modules.bundle_at(records, "tweets", between - dt.timedelta(days=1)) is None
    assert modules.bundle_findings(records) == []

    # a rollback of nfl that nobody recorded as a bundle is a finding, until it is recorded
    rollback(modules.registry_for(params, "nfl"), "oncall", "bad answers in the field")
    (finding,) = modules.bundle_findings(trail.records())
    assert finding.kind == "bundle" and "bundle 2 nfl" in str(finding)
    assert "records v2, but the trail's champion of tweets.nfl is v1" in str(finding)
    from mlra.registry import store_findings

    assert any(f.kind == "bundle" for f in store_findings(trail))
    third = modules.record_bundle(params, "oncall", "after the nfl rollback")
    assert third.versions() == {"nfl": "1", "apple": "1"} and third.router is None
    assert modules.bundle_findings(trail.records()) == []
    assert trail.verify().intact


def test_bundle_commands(store: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    from tests.data.synthetic import raw_params

    raw = raw_params()
    raw["registry"] = {"model_name": "tweets", "experiment": "mlra-test"}
    raw["modules"] |= {"mode": "modular", "domains": ["nfl"]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = _params(tmp_path, modules={"mode": "modular", "domains": ["nfl"]})

    empty = run_cli(["bundle", "show", "--params", str(path)])
    assert empty.returncode == 1 and "no bundle of tweets was serving" in empty.stderr
    _champion(params, "nfl", tmp_path, 0.55, seed=1)
    recorded = run_cli(
        ["bundle", "record", "--params", str(path), "--by", "Ada", "--reason", "first"]
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "bundle 1" in recorded.stdout and "nfl v1" in recorded.stdout
    listed = run_cli(["modules", "--params", str(path)])
    assert listed.returncode == 0, listed.stderr
    (nfl,) = [line for line in listed.stdout.splitlines() if line.startswith("nfl ")]
    # registered here without a training pass: the trail has no training record of it
    assert nfl.split()[1:3] == ["v1", "none"] and nfl.endswith("due: never trained")
    shown = run_cli(["bundle", "show", "--params", str(path)])
    assert shown.returncode == 0 and "nfl" in shown.stdout and "v1" in shown.stdout
    assert "none: requests must name their domain" in shown.stdout
    before = run_cli(["bundle", "show", "--params", str(path), "--at", "2020-01-01"])
    assert before.returncode == 1
    bad = run_cli(["bundle", "show", "--params", str(path), "--at", "yesterday"])
    assert bad.returncode == 2 and "--at must be an ISO 8601 date" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 3  # one-line error, no traceback
