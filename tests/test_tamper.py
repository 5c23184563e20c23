"""The tamper catalogue: each attack an insider with write access to the MLflow registry (what the
UI gives every team member) or to the audit-trail file can make, done only through MLflow's
public client or by editing files, and what catches it: `mlra audit verify` (exit 1, the finding
named), and promote / predict / evaluation refusing. Real SQLite MLflow store, real trail, real
CLI (in-process, `mlra.cli.main`).

One project is built once per module (v1 champion approved by Ada, v2 refused by the validation
gate, v3 passed the gates and awaits approval, v4 rejected); each test works on its own copy of
the store, trail and keyring (the artifact folder is shared and restored by the test that edits
it).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlra.cli import main
from mlra.errors import IntegrityError, PromotionRefused
from mlra.promotion import approve, awaiting_approval, promote, reject, rollback, run_gates
from tests.registry_helpers import make_registry, params_file, policy, register, template_db

__all__ = ["template_db"]


@pytest.fixture(scope="module")
def world(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("tamper-world")
    shutil.copy(template_db, home / "mlruns.db")
    store = {"home": home, "uri": f"sqlite:///{home / 'mlruns.db'}", "trail": home / "audit.jsonl"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLRA_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", store["uri"])
        mp.setenv("MLRA_AUDIT", str(store["trail"]))
        mp.setenv("MLRA_KEYS", str(home / "keys"))
        registry = make_registry(store)
        work = home / "work"
        work.mkdir()
        register(registry, work, 0.55)
        assert run_gates(registry, "1", policy()).passed
        approve(registry, "1", "Ada", "first adapter; golden set reviewed")
        promote(registry, "1", policy(), "ops")
        register(registry, work, 0.7, 0.55, seed=2, passed=False)  # v2: validation failed
        assert not run_gates(registry, "2", policy()).passed
        register(registry, work, 0.6, 0.55, seed=3)  # v3: awaits approval
        assert run_gates(registry, "3", policy()).passed
        register(registry, work, 0.62, 0.55, seed=4)  # v4: rejected
        run_gates(registry, "4", policy())
        reject(registry, "4", "Ada", "labels of batch 4 are suspect")
        assert registry.reconcile() == []
    yield home


@pytest.fixture
def project(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A copy of the world's store, trail and keyring; the environment points at it."""
    home = tmp_path / "project"
    home.mkdir()
    for name in ("mlruns.db", "audit.jsonl", "audit.jsonl.heads"):
        shutil.copy(world / name, home / name)
    shutil.copytree(world / "keys", home / "keys")
    store = {"home": home, "uri": f"sqlite:///{home / 'mlruns.db'}", "trail": home / "audit.jsonl"}
    monkeypatch.setenv("MLRA_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setenv("MLRA_AUDIT", str(store["trail"]))
    monkeypatch.setenv("MLRA_KEYS", str(home / "keys"))
    params = params_file(tmp_path / "params.yaml", approval="manual")
    registry = make_registry(store)
    # the copy's trail lives elsewhere now: say so in the registry (as one would after a move)
    registry.client.set_registered_model_tag(
        registry.model, "mlra.audit.trail", str(store["trail"])
    )
    return {**store, "registry": registry, "params": str(params)}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def verify(capsys: pytest.CaptureFixture[str], project: dict[str, Any]) -> tuple[int, str]:
    return cli(capsys, "audit", "verify")


def test_the_untouched_world_verifies(project: dict[str, Any], capsys: Any) -> None:
    code, out = verify(capsys, project)
    assert code == 0, out
    assert "the registry agrees with the trail" in out
    code, out = cli(capsys, "status", "--params", project["params"])
    assert code == 0 and "FINDING" not in out, out


def test_approval_tags_set_by_hand_approve_nothing(project: dict[str, Any], capsys: Any) -> None:
    registry = project["registry"]
    for key, value in (
        ("mlra.approved_by", "Ada"),
        ("mlra.approved_at", "2026-12-01T00:00:00+00:00"),
        ("mlra.approval_reason", "looks fine"),
    ):
        registry.client.set_model_version_tag(registry.model, "3", key, value)
    with pytest.raises(PromotionRefused, match="the registry disagrees with the audit trail"):
        promote(registry, "3", policy(), "ops")
    code, out = verify(capsys, project)
    assert code == 1
    assert "v3 mlra.approved_by: set to 'Ada' in the registry, but the trail records no such" in out
    cli(capsys, "repair", "--params", project["params"], "--reason", "tags set by hand")
    with pytest.raises(PromotionRefused, match="gate 'approval': no approval recorded"):
        promote(registry, "3", policy(), "ops")  # the trail decides: never approved


def test_validation_and_gate_tags_do_not_pass_a_failed_version(
    project: dict[str, Any], capsys: Any
) -> None:
    registry = project["registry"]
    registry.client.set_model_version_tag(registry.model, "2", "mlra.validation", "passed")
    registry.client.set_model_version_tag(registry.model, "2", "mlra.gate", "passed")
    with pytest.raises(PromotionRefused, match=r"v2 mlra\.validation: is 'passed' in the regis"):
        approve(registry, "2", "Grace", "tags say it passed")
    code, out = verify(capsys, project)
    assert code == 1
    assert "v2 mlra.validation: is 'passed' in the registry; the trail says 'failed'" in out
    # were the tags never caught (repaired away), the trail still decides
    project["registry"].sync("2")
    with pytest.raises(PromotionRefused, match=r"has not passed the gates .*refused:validation"):
        approve(registry, "2", "Grace", "tags say it passed")
    with pytest.raises(PromotionRefused, match="gate 'validation': data validation failed"):
        promote(registry, "2", policy(approval="automatic"), "ops")


def test_a_deleted_rejection_tag_does_not_lift_the_rejection(
    project: dict[str, Any], capsys: Any
) -> None:
    registry = project["registry"]
    for key in ("mlra.rejected_at", "mlra.rejected_by", "mlra.rejection_reason"):
        registry.client.delete_model_version_tag(registry.model, "4", key)
    code, out = verify(capsys, project)
    assert code == 1 and "v4 mlra.rejected_by: missing in the registry" in out
    code, out = cli(capsys, "status", "--params", project["params"])
    assert code == 1 and re.search(r"v4: +rejected", out), out
    assert "4" not in awaiting_approval(registry)


def test_a_champion_moved_in_the_ui_is_refused_then_repaired(
    project: dict[str, Any], capsys: Any
) -> None:
    registry = project["registry"]
    registry.client.set_registered_model_alias(registry.model, "champion", "2")
    code, out = verify(capsys, project)
    assert code == 1
    assert "champion: points at v2, but the trail (record" in out and "says v1" in out
    code, out = cli(capsys, "status", "--params", project["params"])
    assert code == 1 and "FINDING" in out
    code, out = cli(capsys, "predict", "--params", project["params"], "hello")
    assert code == 1 and "'champion' points at v2, but the audit trail says v1" in out
    with pytest.raises(IntegrityError, match="alias was moved outside mlra"):
        registry.fetch_champion(project["home"] / "champion")  # what evaluation compares with
    code, out = cli(capsys, "repair", "--params", project["params"], "--by", "oncall",
                    "--reason", "champion moved by hand in the UI")  # fmt: skip
    assert code == 0, out
    assert registry.alias("champion") == "1"
    assert verify(capsys, project)[0] == 0
    repair = registry.trail.records()[-1]
    assert repair.action == "repair" and "champion: points at v2" in repair.details["findings"][0]


def test_rollback_follows_the_trail_not_the_alias(project: dict[str, Any]) -> None:
    registry = project["registry"]
    approve(registry, "3", "Grace", "better on every slice")
    promote(registry, "3", policy(), "ops")
    registry.client.set_registered_model_alias(registry.model, "champion", "2")  # tampering
    registry.client.set_model_version_tag(registry.model, "3", "mlra.previous_champion", "2")
    move = rollback(registry, "oncall", "regression in prod")
    assert (move.version, move.previous) == ("1", "3")
    assert registry.alias("champion") == "1" and registry.reconcile() == []


def test_a_copied_version_has_no_registration_of_its_own(
    project: dict[str, Any], capsys: Any
) -> None:
    registry = project["registry"]
    copy = registry.client.copy_model_version(f"models:/{registry.model}/3", registry.model)
    v = str(copy.version)
    assert registry.tags(v)["mlra.audit.registration"]  # the anchor came along with the copy
    code, out = verify(capsys, project)
    assert code == 1
    assert f"v{v}: has no registration record of its own; its registration anchor is record" in out
    with pytest.raises(PromotionRefused, match=f"v{v}: has no registration record of its own"):
        approve(registry, v, "Grace", "a copy of v3")
    with pytest.raises(PromotionRefused, match="gate 'registered'"):
        from mlra.promotion import evaluate_gates

        raise PromotionRefused(str(evaluate_gates(registry, v, policy())))
    code, out = cli(capsys, "predict", "--params", project["params"], "--version", v, "hi")
    assert code == 1 and f"version {v} of tweets-sentiment has no registration record" in out
    registry.client.set_registered_model_alias(registry.model, "champion", v)
    code, out = cli(capsys, "predict", "--params", project["params"], "hi")
    assert code == 1 and f"'champion' points at v{v}, but the audit trail says v1" in out


def test_the_trail_tag_is_no_off_switch(project: dict[str, Any], capsys: Any) -> None:
    registry = project["registry"]
    registry.client.set_registered_model_tag(registry.model, "mlra.audit.trail", "/tmp/elsewhere")
    code, out = verify(capsys, project)
    assert code == 1 and "records its audit trail at '/tmp/elsewhere'" in out
    with pytest.raises(IntegrityError, match="records its audit trail at '/tmp/elsewhere'"):
        promote(registry, "3", policy(approval="automatic"), "ops")
    code, out = cli(capsys, "predict", "--params", project["params"], "hi")
    assert code == 1 and "/tmp/elsewhere" in out


def test_a_missing_or_mistyped_trail_is_a_failure(
    project: dict[str, Any], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = cli(capsys, "audit", "verify", "--path", "/nonexistent/audit.jsonl")
    assert code == 1 and "no audit trail there" in out and "intact" not in out
    monkeypatch.setenv("MLRA_AUDIT", str(project["home"] / "audit.jsnol"))  # a typo
    code, out = cli(capsys, "audit", "verify")
    assert code == 1 and "no audit trail there" in out
    monkeypatch.setenv("MLRA_AUDIT", str(project["trail"]))
    project["trail"].write_text("")  # emptied while the registry holds anchors
    code, out = verify(capsys, project)
    assert code == 1 and "anchored record" in out and "is missing" in out
    with pytest.raises(IntegrityError, match="does not verify"):
        project["registry"].state()
    project["trail"].unlink()
    with pytest.raises(IntegrityError, match="is missing, but model 'tweets-sentiment' holds"):
        project["registry"].state()


def test_a_cut_or_consistently_rewritten_trail_is_caught(
    project: dict[str, Any], capsys: Any
) -> None:
    from mlra._hashing import canonical_json, sha256_hex
    from mlra.audit import GENESIS

    path: Path = project["trail"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # the tail cut off
    code, out = verify(capsys, project)
    assert code == 1 and "is missing" in out

    # every hash recomputed after removing v4's rejection: a valid chain, but not the registry's
    kept = [json.loads(x) for x in lines if json.loads(x)["action"] != "rejection"]
    prev, rewritten = GENESIS, []
    for seq, record in enumerate(kept):
        record.update(seq=seq, prev_hash=prev)
        record.pop("hash")
        record["hash"] = prev = sha256_hex(canonical_json(record))
        rewritten.append(json.dumps(record))
    path.write_text("\n".join(rewritten) + "\n")
    code, out = verify(capsys, project)
    assert code == 1 and "anchored record" in out
    with pytest.raises(IntegrityError, match="does not verify"):
        promote(project["registry"], "4", policy(approval="automatic"), "ops")

    # with the registry's anchors rewritten to match too (an attacker of both stores), the
    # signed head checkpoints (the second anchor) still refuse the rewritten chain
    from mlra.audit import FileTrail

    assert "anchored record" in FileTrail(path).verify().reason
    heads = Path(str(path) + ".heads")
    heads.unlink()
    code, out = verify(capsys, project)
    assert code == 1 and "head checkpoints" in out and "are missing" in out


def test_recomputed_hashes_after_editing_weights_fail_the_signature(
    project: dict[str, Any], world: Path
) -> None:
    """Edit the weights of v1 in the artifact store and recompute every hash in its manifest
    (nothing but the private signing key is missing): fetch, predict and rollback refuse it."""
    import hashlib

    registry = project["registry"]
    stored = Path(registry.version("1").source.removeprefix("file://"))
    backup = world / "v1-backup"
    shutil.copytree(stored, backup)
    try:
        weights = stored / "adapter_model.safetensors"
        blob = bytearray(weights.read_bytes())
        blob[-1] ^= 1
        weights.write_bytes(bytes(blob))
        manifest = json.loads((stored / "manifest.json").read_text())
        manifest["files"]["adapter_model.safetensors"] = hashlib.sha256(blob).hexdigest()
        (stored / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        edited = r"manifest\.json was changed after it was written"
        with pytest.raises(IntegrityError, match=edited):
            registry.fetch("1", project["home"] / "fetched")  # the manifest hashes itself too

        # a careful attacker re-saves a whole consistent artifact (mlra.save_adapter) and keeps
        # the old signature.json: the registration record's sha256 and the signature refuse it
        from mlra.signing import verify_artifact
        from tests.registry_helpers import tiny_adapter

        signature = (backup / "signature.json").read_bytes()
        shutil.rmtree(stored)
        tiny_adapter(stored, seed=99)
        (stored / "signature.json").write_bytes(signature)
        changed = r"registration record .* the artifact store changed"
        with pytest.raises(IntegrityError, match=changed):
            registry.fetch("1", project["home"] / "fetched2")
        trusted = registry.state().versions["1"].details["signature"]
        with pytest.raises(IntegrityError, match="signature"):
            verify_artifact(stored, {trusted["identity"]: trusted["public_key"]})
    finally:
        shutil.rmtree(stored)
        shutil.copytree(backup, stored)
        shutil.rmtree(backup)


def test_who_may_approve(project: dict[str, Any], tmp_path: Path) -> None:
    from mlra.config import Approver
    from mlra.signing import Keyring

    registry = project["registry"]
    duties = "rule 'separation of duties': 'pipeline' trained v3"
    with pytest.raises(PromotionRefused, match=duties):
        approve(registry, "3", "pipeline", "I trained it, it is fine")
    grace = Keyring().signer("Grace").public_key
    strict = policy(approvers=(Approver("Grace", grace),))
    with pytest.raises(PromotionRefused, match="rule 'approvers': 'Mallory' is not in"):
        approve(registry, "3", "Mallory", "trust me", strict)

    # an approval record forged by someone who can append to the trail file, signed with a key
    # of their own under Grace's name: the listed public key refuses it
    from mlra.promotion import _signed_payload

    vs = registry.state().versions["3"]
    forged = Keyring(tmp_path / "mallory-keys").signer("Grace")
    signature = forged.sign(_signed_payload(registry.model, vs, "approved", "Grace", "ok"))
    registry.record(
        "Grace",
        "approval",
        "3",
        {"reason": "ok", "outcome": "approved", "signature": signature.to_dict()},
        adapter_sha256=vs.adapter_sha256,
    )
    registry.sync("3")  # a careful forger also sets the tags the UI shows
    with pytest.raises(PromotionRefused, match=r"the approval by 'Grace' .* does not verify"):
        promote(registry, "3", strict, "ops")
    approve(registry, "3", "Grace", "better on every slice", strict)  # her own key
    assert promote(registry, "3", strict, "ops").approver == "Grace"


def test_metrics_against_an_older_champion_are_refused(project: dict[str, Any]) -> None:
    registry = project["registry"]
    approve(registry, "3", "Grace", "better on every slice")
    promote(registry, "3", policy(), "ops")
    stale = {"version": "1", "adapter_sha256": registry.state().versions["1"].adapter_sha256}
    from tests.registry_helpers import metrics, tiny_adapter, validation_report

    folder = project["home"] / "stale"
    folder.mkdir()
    data = metrics(0.7, 0.55) | {"champion_ref": stale}
    with pytest.raises(Exception, match=r"compared against v1 .* but the champion is now v3"):
        registry.register(
            tiny_adapter(folder / "adapter", seed=9),
            metrics=data,
            validation=validation_report(folder / "report.json"),
            params={},
        )


def test_cli_approve_signs_and_promotes_when_no_run_waits(
    project: dict[str, Any], capsys: Any
) -> None:
    registry = project["registry"]
    params = project["params"]
    code, out = cli(
        capsys, "approve", "3", "--by", "pipeline", "--reason", "mine", "--params", params
    )
    assert code == 1 and "rule 'separation of duties'" in out
    code, out = cli(capsys, "approve", "3", "--by", "Grace Hopper", "--reason", "+5 points",
                    "--no-promote", "--params", params)  # fmt: skip
    assert code == 0 and "signed with key" in out, out
    assert registry.state().champion == "1"
    code, out = cli(capsys, "approve", "3", "--by", "Grace Hopper", "--reason", "+5 points",
                    "--params", params)  # fmt: skip
    assert code == 0 and "v3 is champion" in out, out
    approval = [r for r in registry.trail.records() if r.action == "approval"][-1]
    assert approval.actor == "Grace Hopper" and approval.details["signature"]["key_id"]
    assert registry.reconcile() == []
