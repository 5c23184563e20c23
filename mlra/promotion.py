"""Promotion: the gates, the challenger, approval, the champion, rollback and repair.

Every decision here is taken from the **verified audit trail** (:meth:`Registry.state`,
:mod:`mlra.governance`), never from registry tags, which anyone with write access to MLflow can
edit. Tags, aliases and the model card are the trail's projection, rewritten after each decision
(:meth:`Registry.sync`); :meth:`Registry.reconcile` lists where the live registry disagrees.

1. :func:`run_gates` checks the gates of params.yaml's ``promotion`` section, in order
   (:data:`GATES`): a registration record of its own, data validation passed (as recorded at
   registration), the artifact verifies (files, sha256, base fingerprint, signature), it was
   evaluated against the champion that still serves, its overall macro-F1 gains enough, and no
   slice regresses more than allowed. A passing version becomes ``challenger``.
2. :func:`approve` (a person, with a reason, signed with their key) or :func:`reject`. Who may
   approve: ``promotion.approvers`` (names and public keys) and separation of duties (the actor
   who trained or registered a version may not approve it).
3. :func:`promote` moves ``champion``: the gates again, then an approval newer than any rejection
   or rollback of the version whose signature verifies, unless the policy is automatic.
4. :func:`rollback` moves ``champion`` back to the version the current champion replaced (by the
   trail). :func:`repair` puts aliases and tags back where the trail says, recorded.

Every mutation holds the registry's lock, so two promotions at once run one after the other.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlra._hashing import canonical_json
from mlra.audit import AuditRecord
from mlra.config import PromotionParams
from mlra.errors import IntegrityError, PromotionRefused
from mlra.governance import (
    CHALLENGER,
    CHAMPION,
    GATES,
    Finding,
    GateResult,
    ModelState,
    VersionState,
    key_identity,
    version_label,
)
from mlra.registry import Registry
from mlra.registry.store import check_text

__all__ = [
    "AUTOMATIC",
    "GATES",
    "GateDecision",
    "GateResult",
    "PromotionParams",
    "Transition",
    "approve",
    "awaiting_approval",
    "evaluate_gates",
    "promote",
    "reject",
    "repair",
    "rollback",
    "run_gates",
]

AUTOMATIC: Final = "policy:automatic"


@dataclass(frozen=True)
class GateDecision:
    """The outcome of every gate for one version, in :data:`GATES` order (stops at the first
    refusal: later gates are not meaningful when, e.g., the artifact does not verify)."""

    version: str
    gates: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates) and len(self.gates) == len(GATES)

    @property
    def refused_by(self) -> GateResult | None:
        return next((g for g in self.gates if not g.passed), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": "passed" if self.passed else f"refused:{self.refused_by.name}",  # type: ignore[union-attr]
            "gates": {g.name: {"ok": g.passed, "detail": g.detail} for g in self.gates},
        }

    def __str__(self) -> str:
        if self.passed:
            return f"v{self.version} passed every gate"
        bad = self.refused_by
        assert bad is not None
        return f"v{self.version} refused at gate '{bad.name}': {bad.detail}"


@dataclass(frozen=True)
class Transition:
    """A move of ``champion``: to ``version`` from ``previous`` (None: there was none)."""

    version: str
    previous: str | None
    approver: str
    record: AuditRecord


def evaluate_gates(
    registry: Registry,
    version: str | int,
    policy: PromotionParams,
    state: ModelState | None = None,
) -> GateDecision:
    """Check every gate for ``version`` without changing anything (from the trail's state)."""
    state = state or registry.state()
    v = str(registry.version(version).version)
    vs = state.version(v)
    results: list[GateResult] = []

    def gate(name: str, ok: bool, detail: str) -> bool:
        results.append(GateResult(name, ok, detail))
        return ok

    if not gate(
        "registered",
        vs is not None,
        f"registration record {vs.registration.seq} by {vs.registered_by!r}"
        if vs is not None
        else "no registration record of its own in the audit trail: register versions with "
        "`mlra register` (a copied or hand-made version is never promoted)",
    ):
        return GateDecision(v, tuple(results))
    assert vs is not None
    if not gate(
        "validation",
        vs.validation == "passed",
        f"data validation {vs.validation} (registration record {vs.registration.seq})",
    ):
        return GateDecision(v, tuple(results))
    try:
        with tempfile.TemporaryDirectory(prefix="mlra-gate-") as tmp:
            fetched = registry.fetch(v, tmp, state)
        metrics = registry.metrics(v, state)
        ok, detail = True, f"sha256 {fetched.manifest.sha256[:12]}… and signature verified"
    except IntegrityError as exc:
        ok, detail = False, str(exc)
    if not gate("artifact", ok, detail):
        return GateDecision(v, tuple(results))
    parent, champion = vs.parent, state.champion
    fresh = parent == champion or champion == v
    if not gate(
        "champion",
        fresh,
        f"evaluated against {version_label(parent) if parent else 'the base model'}"
        + ("" if fresh else f", but the champion is now v{champion}: evaluate it again"),
    ):
        return GateDecision(v, tuple(results))
    reference = f"champion v{parent}" if parent else "the base model"
    gain = float(metrics.overall.candidate["macro_f1"]) - float(
        metrics.overall.reference()["macro_f1"]
    )
    if not gate(
        "overall_gain",
        gain >= policy.min_overall_gain,
        f"overall macro-F1 {gain:+.4f} against {reference} "
        f"(minimum {policy.min_overall_gain:+.4f})",
    ):
        return GateDecision(v, tuple(results))
    worst_name, worst, skipped = None, 0.0, []
    for name, sl in sorted(metrics.slices.items()):
        if sl.support < policy.min_slice_support:
            skipped.append(name)
            continue
        drop = float(sl.reference()["macro_f1"]) - float(sl.candidate["macro_f1"])
        if worst_name is None or drop > worst:
            worst_name, worst = name, drop
    note = (
        f"; not gated (support < {policy.min_slice_support}): {', '.join(skipped)}"
        if skipped
        else ""
    )
    gate(
        "slice_regression",
        worst <= policy.max_slice_regression,
        (
            f"largest slice change {-worst:+.4f} macro-F1 on {worst_name!r} against {reference} "
            f"(largest drop allowed {policy.max_slice_regression:.4f})"
            if worst_name is not None
            else "no slice large enough to gate"
        )
        + note,
    )
    return GateDecision(v, tuple(results))


def run_gates(
    registry: Registry, version: str | int, policy: PromotionParams, actor: str = "pipeline"
) -> GateDecision:
    """Check the gates, record the decision, and give a passing version the ``challenger``
    alias (a refused one loses it). Returns the decision; raises nothing for a refusal."""
    actor = check_text("the actor", actor)
    with registry.locked():
        state = _require_consistent(registry, f"gating v{version}")
        decision = evaluate_gates(registry, version, policy, state)
        _record_gate(registry, state, decision, actor, requested=CHALLENGER)
        _project(registry, decision.version)
    return decision


def _record_gate(
    registry: Registry,
    state: ModelState,
    decision: GateDecision,
    actor: str,
    requested: str,
) -> None:
    vs = state.version(decision.version)
    registry.record(
        actor,
        "gate",
        decision.version,
        {**decision.to_dict(), "requested": requested},
        adapter_sha256=vs.adapter_sha256 if vs else None,
    )


def _who_may_approve(vs: VersionState, by: str, policy: PromotionParams | None) -> None:
    """The approval rules: a listed approver (when ``promotion.approvers`` is set) and
    separation of duties. Raises PromotionRefused naming the rule."""
    if by == AUTOMATIC:
        raise PromotionRefused(
            f"rule 'approver': {AUTOMATIC!r} is the policy's name; a person approves with their "
            "own name"
        )
    if policy is not None and policy.approvers and by not in {a.name for a in policy.approvers}:
        names = ", ".join(a.name for a in policy.approvers)
        raise PromotionRefused(
            f"rule 'approvers': {by!r} is not in promotion.approvers ({names}); ask one of them"
        )
    if policy is None or policy.separation_of_duties:
        for role, actor in (("trained", vs.trained_by), ("registered", vs.registered_by)):
            if actor == by:
                raise PromotionRefused(
                    f"rule 'separation of duties': {by!r} {role} v{vs.version} and may not "
                    "approve it; another person must (promotion.separation_of_duties)"
                )


def _signed_payload(model: str, vs: VersionState, decision: str, by: str, reason: str) -> bytes:
    return canonical_json(
        {
            "model": model,
            "version": vs.version,
            "adapter_sha256": vs.adapter_sha256,
            "decision": decision,
            "by": by,
            "reason": reason,
        }
    )


def approve(
    registry: Registry,
    version: str | int,
    by: str,
    reason: str,
    policy: PromotionParams | None = None,
) -> AuditRecord:
    """Record ``by``'s approval of ``version`` for promotion to champion, with ``reason``, signed
    with ``by``'s key from the keyring (created on first use; :mod:`mlra.signing`).

    Only a version whose last gate decision passed (by the trail) can be approved, and only by a
    person the policy allows (:func:`_who_may_approve`)."""
    from mlra.signing import Keyring

    by, reason = check_text("--by", by), check_text("--reason", reason)
    with registry.locked():
        state = _require_consistent(registry, f"approving v{version}")
        v = str(registry.version(version).version)
        vs = _require_registered(state, v)
        if vs.gate != "passed":
            raise PromotionRefused(
                f"gate 'approval': v{v} has not passed the gates (last decision: "
                f"{vs.gate or 'none yet'}); run `mlra gate {v}` first"
            )
        if state.champion == v:
            raise PromotionRefused(f"gate 'approval': v{v} is already the champion")
        _who_may_approve(vs, by, policy)
        payload = _signed_payload(registry.model, vs, "approved", by, reason)
        signature = Keyring().signer(key_identity(by)).sign(payload)
        record = registry.record(
            by,
            "approval",
            v,
            {"reason": reason, "outcome": "approved", "signature": dict(signature.to_dict())},
            adapter_sha256=vs.adapter_sha256,
        )
        _project(registry, v)
    return record


def reject(registry: Registry, version: str | int, by: str, reason: str) -> AuditRecord:
    """Record ``by``'s rejection of ``version``: it loses ``challenger`` and cannot be promoted
    (a later approval overrides the rejection, and is recorded as such)."""
    by, reason = check_text("--by", by), check_text("--reason", reason)
    with registry.locked():
        state = _require_consistent(registry, f"rejecting v{version}")
        v = str(registry.version(version).version)
        vs = _require_registered(state, v)
        if state.champion == v:
            raise PromotionRefused(
                f"gate 'rejection': v{v} is the champion; roll back (`mlra rollback`) instead"
            )
        record = registry.record(
            by,
            "rejection",
            v,
            {"reason": reason, "outcome": "rejected"},
            adapter_sha256=vs.adapter_sha256,
        )
        _project(registry, v)
    return record


def _approval_refusal(registry: Registry, vs: VersionState, policy: PromotionParams) -> str | None:
    """Why ``vs`` may not be promoted for lack of a valid approval (None: it may)."""
    from mlra.signing import verify

    v = vs.version
    if vs.approval is None:
        return f"no approval recorded; run `mlra approve {v} --by NAME --reason TEXT`"
    if not vs.approved:
        if vs.rolled_back is not None and vs.rolled_back.seq > vs.approval.seq:
            return (
                f"it was rolled back at {vs.rolled_back.time}, after its approval; approve it again"
            )
        assert vs.rejection is not None
        return f"rejected by {vs.rejection.by!r} after its approval"
    a = vs.approval
    try:
        _who_may_approve(vs, a.by, policy)
    except PromotionRefused as exc:
        return f"the approval by {a.by!r} no longer satisfies the policy: {exc}"
    if not isinstance(a.signature, Mapping):
        return f"the approval by {a.by!r} (record {a.seq}) is not signed"
    listed = {x.name: x.public_key for x in policy.approvers}
    key = listed.get(a.by) or str(a.signature.get("public_key", ""))
    try:
        verify(
            _signed_payload(registry.model, vs, "approved", a.by, a.reason),
            a.signature,
            {key_identity(a.by): key},
        )
    except IntegrityError as exc:
        return f"the approval by {a.by!r} (record {a.seq}) does not verify: {exc}"
    return None


def promote(
    registry: Registry, version: str | int, policy: PromotionParams, actor: str = "pipeline"
) -> Transition:
    """Make ``version`` the champion, if it passes every gate and is approved (or the policy is
    automatic). Raises :class:`PromotionRefused` naming the gate, after recording the refusal."""
    actor = check_text("the actor", actor)
    with registry.locked():
        state = _require_consistent(registry, f"promoting v{version}")
        v = str(registry.version(version).version)
        previous = state.champion
        if previous == v:
            raise PromotionRefused(f"gate 'champion': v{v} is already the champion")
        decision = evaluate_gates(registry, v, policy, state)
        refusal: str | None = None if decision.passed else str(decision)
        automatic = policy.approval == "automatic" or (
            policy.approval == "first-automatic" and previous is None
        )
        vs = state.version(v)
        if refusal is None and not automatic:
            assert vs is not None
            why = _approval_refusal(registry, vs, policy)
            if why is not None:
                refusal = f"v{v} refused at gate 'approval': {why}"
        _record_gate(registry, state, decision, actor, requested=CHAMPION)
        if refusal is not None:
            if decision.passed:  # refused for lack of approval: say so in the trail too
                assert vs is not None
                registry.record(
                    actor,
                    "promotion",
                    v,
                    {"outcome": "refused", "reason": refusal.split(": ", 1)[1]},
                    adapter_sha256=vs.adapter_sha256,
                )
            _project(registry, v)
            raise PromotionRefused(refusal)
        assert vs is not None
        if automatic:
            why = (
                "automatic"
                if policy.approval == "automatic"
                else "first-automatic and no champion serves yet"
            )
            _approve_automatically(registry, vs, f"params.yaml promotion.approval is {why}")
            approver = AUTOMATIC
        else:
            assert vs.approval is not None
            approver = vs.approval.by
        transition = _move_champion(
            registry, vs, previous, actor, "promotion", {"approved_by": approver}
        )
        _project(registry, *filter(None, (v, previous)))
    return transition


def _approve_automatically(registry: Registry, vs: VersionState, reason: str) -> None:
    from mlra.signing import Keyring

    signature = (
        Keyring()
        .signer(key_identity(AUTOMATIC))
        .sign(_signed_payload(registry.model, vs, "approved", AUTOMATIC, reason))
    )
    registry.record(
        AUTOMATIC,
        "approval",
        vs.version,
        {"reason": reason, "outcome": "approved", "signature": dict(signature.to_dict())},
        adapter_sha256=vs.adapter_sha256,
    )


def rollback(registry: Registry, actor: str, reason: str) -> Transition:
    """Move ``champion`` back to the version the current champion replaced, by the trail (an
    alias moved by hand does not change what "previous" means)."""
    actor = check_text("--by", actor)
    reason = check_text("--reason", reason)
    with registry.locked():
        state = registry.state()
        # an emergency move to the recorded previous champion: allowed when the registry was
        # tampered with (it is where the trail says to go), and the findings are recorded
        findings = [str(f) for f in registry.reconcile(state)]
        current = state.champion
        if current is None:
            raise PromotionRefused("gate 'rollback': there is no champion to roll back")
        previous = state.previous.get(current)
        if previous is None:
            raise PromotionRefused(
                f"gate 'rollback': champion v{current} has no previous champion to roll back to"
            )
        with tempfile.TemporaryDirectory(prefix="mlra-rollback-") as tmp:
            registry.fetch(previous, tmp, state)  # never serve an artifact that fails to verify
        transition = _move_champion(
            registry,
            state.versions[previous],
            current,
            actor,
            "rollback",
            {"reason": reason, "from": current, "findings": findings},
        )
        _project(registry, previous, current)
    return transition


def repair(registry: Registry, actor: str, reason: str) -> list[Finding]:
    """Put the registry back where the trail says: the trail tag, each alias, and every
    version's ``mlra.*`` tags and card. Recorded (one ``repair`` record listing what was found).
    Returns the findings that remain (e.g. a copied version, which is left for a person to
    delete)."""
    actor = check_text("--by", actor)
    reason = check_text("--reason", reason)
    with registry.locked():
        registry.restore_trail_tag()
        found = registry.reconcile()
        if any(f.kind == "trail" for f in found):
            raise IntegrityError(
                "the audit trail itself does not verify: restore it before repairing the "
                "registry from it; " + "; ".join(str(f) for f in found if f.kind == "trail")
            )
        state = registry.state()
        _align_aliases(registry, state, move_champion=True)
        live = {str(mv.version) for mv in registry.versions()}
        for v in sorted(set(state.versions) & live, key=int):
            registry.sync(v, state)
        registry.record(
            actor,
            "repair",
            None,
            {"reason": reason, "findings": [str(f) for f in found], "outcome": "done"},
        )
    return registry.reconcile()


def _move_champion(
    registry: Registry,
    vs: VersionState,
    previous: str | None,
    actor: str,
    action: str,
    details: Mapping[str, Any],
) -> Transition:
    """Record the move of ``champion`` to ``vs`` in the trail (the decision), then point the
    alias there and read it back (the projection)."""
    v = vs.version
    record = registry.record(
        actor,
        action,
        v,
        {**details, "outcome": "done", "previous": previous or "none"},
        adapter_sha256=vs.adapter_sha256,
    )
    registry.set_alias(CHAMPION, v)
    now = registry.alias(CHAMPION)
    if now != v:
        raise PromotionRefused(
            f"gate 'champion': another writer moved champion to v{now} while v{v} was promoted; "
            "the registry's lock does not cover this store (see docs/governance.md); "
            "`mlra audit verify` reports it and `mlra repair` restores the recorded champion"
        )
    return Transition(v, previous, str(details.get("approved_by", actor)), record)


def _project(registry: Registry, *versions: str) -> None:
    """After a decision: aliases and each touched version's tags and card as the trail says.

    The decision is already recorded; if this account may not write the registry (MLflow's
    permissions: deleting an alias or a tag needs MANAGE), say so instead of failing half-way
    silently: the registry then lags the trail until someone who may runs `mlra repair`."""
    from mlflow.exceptions import MlflowException

    try:
        state = registry.state()
        # champion moves only in _move_champion (recorded first, then read back)
        _align_aliases(registry, state, move_champion=False)
        for v in dict.fromkeys(versions):
            registry.sync(v, state)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "PERMISSION_DENIED":
            raise
        raise PromotionRefused(
            "the decision is recorded in the audit trail, but this MLflow account may not update "
            f"the registry to show it ({exc.message.splitlines()[0][:200]}); until an account "
            "with MANAGE on the model runs `mlra repair --reason …`, `mlra audit verify` lists the "
            "difference and further decisions wait"
        ) from exc


def _align_aliases(registry: Registry, state: ModelState, *, move_champion: bool) -> None:
    """Point ``challenger`` (and ``champion`` with ``move_champion``; else only its removal)
    where the trail's state says."""
    for alias, want in ((CHALLENGER, state.challenger), (CHAMPION, state.champion)):
        if registry.alias(alias) == want:
            continue
        if want is None or alias == CHALLENGER or move_champion:
            registry.set_alias(alias, want)


def _require_consistent(registry: Registry, doing: str) -> ModelState:
    """No decision is taken while the registry disagrees with the trail: the disagreement is
    evidence for a person to look at (`mlra audit verify`), and `mlra repair` clears it.
    Returns the trail's state the check passed on (a trail that does not verify raises its own
    IntegrityError)."""
    state = registry.state()
    findings = registry.reconcile(state)
    for wait in (0.5, 1.0, 2.0):  # a writer on another machine may be mid-projection
        if not findings:
            break
        time.sleep(wait)
        state = registry.state()
        findings = registry.reconcile(state)
    if findings:
        shown = "; ".join(str(f) for f in findings[:3])
        more = f" (and {len(findings) - 3} more)" if len(findings) > 3 else ""
        raise PromotionRefused(
            f"{doing} refused: the registry disagrees with the audit trail: {shown}{more}; "
            "run `mlra audit verify`, then `mlra repair --reason TEXT` once it is understood"
        )
    return state


def _require_registered(state: ModelState, v: str) -> VersionState:
    vs = state.version(v)
    if vs is None:
        raise PromotionRefused(
            f"gate 'registered': v{v} has no registration record of its own in the audit trail"
        )
    return vs


def awaiting_approval(registry: Registry, state: ModelState | None = None) -> list[str]:
    """Versions that passed the gates and wait for a person (by the trail): not approved since,
    not rejected, not the champion."""
    return awaiting_approval_in(state or registry.state())


def awaiting_approval_in(state: ModelState) -> list[str]:
    """:func:`awaiting_approval` of a replayed state."""
    return [
        v
        for v, vs in state.versions.items()
        if v != state.champion
        and vs.gate == "passed"
        and vs.approval is None
        and vs.rejection is None
    ]


def decided(state: ModelState) -> dict[str, str]:
    """Every version with where it stands (by the trail), oldest first."""
    return {v: vs.status for v, vs in sorted(state.versions.items(), key=lambda kv: int(kv[0]))}


def status(registry: Registry) -> dict[str, Any]:
    """Where everything lives and stands: the store, the model, its aliases, every version's
    standing, the last run and the audit trail with every disagreement between the registry
    and the trail (:meth:`Registry.reconcile`).

    An embedded SQLite store that does not exist yet is reported as empty, not created."""
    exists = registry.exists()
    state = ModelState(registry.model)
    findings: list[Finding] = []
    if exists:
        try:
            state = registry.state()
            findings = registry.reconcile(state)
        except IntegrityError as exc:  # the trail itself: one finding, as reconcile reports it
            findings = [Finding("trail", "audit trail", str(exc))]
    versions = registry.versions() if exists else []
    last_run = registry.last_run() if exists else None
    records = len(registry.trail.records()) if registry.trail.exists() else 0
    return {
        "tracking_uri": registry.location,
        "registry_exists": exists,
        "experiment": registry.experiment,
        "model": registry.model,
        "versions": len(versions),
        "latest_version": str(versions[-1].version) if versions else None,
        "champion": registry.alias(CHAMPION) if exists else None,
        "challenger": registry.alias(CHALLENGER) if exists else None,
        "trail_champion": state.champion,
        "awaiting_approval": awaiting_approval(registry, state) if state.versions else [],
        "standing": decided(state),
        "last_run": last_run,
        "lock": {"path": str(registry.lock_path), "shared": registry.lock_is_shared},
        "audit": {
            "path": registry.trail_location,
            "intact": not findings,
            "records": records,
            "exists": registry.trail.exists(),
            "findings": [str(f) for f in findings],
            "reason": "; ".join(str(f) for f in findings) or None,
        },
    }


def load_policy(path: str = "params.yaml") -> PromotionParams:
    """params.yaml's ``promotion`` section, checked (:class:`mlra.config.PromotionParams`)."""
    from mlra.config import load_params

    return load_params(path).promotion
