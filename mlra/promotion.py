"""Promotion: the gates, the challenger, approval, the champion, rollback.

A registered version moves through the registry's aliases:

1. :func:`run_gates` checks the gates of params.yaml's ``promotion`` section, in order
   (:data:`GATES`): it was registered through mlra, its data validation passed, its artifact
   verifies, it was evaluated against the champion that is still the champion, its overall
   macro-F1 gains enough over that champion (over the base model when there is none), and no slice
   regresses more than allowed. A passing version gets the alias ``challenger``. The decision is
   an audit record and the tag ``mlra.gate`` (``passed`` or ``refused:<gate>``).
2. :func:`approve` (a person, with a reason) or :func:`reject`. Tags ``mlra.approved_by``,
   ``mlra.approval_reason``, ``mlra.approved_at`` (or ``mlra.rejected_*``) and an audit record.
3. :func:`promote` moves ``champion`` to the version: the gates again (fresh: the artifact is
   verified again, the champion may have moved), then an approval newer than any rollback of the
   version, unless ``promotion.approval`` is ``automatic``, or ``first-automatic`` while no
   champion serves yet (the approver recorded is then ``policy:automatic``). Refusal raises
   :class:`~mlra.errors.PromotionRefused` naming the gate, and is recorded too. The new
   champion's ``mlra.previous_champion`` remembers the old one.
4. :func:`rollback` moves ``champion`` back to ``mlra.previous_champion`` of the current one.

Every mutation holds the registry's lock (:meth:`mlra.registry.Registry.locked`), so two
promotions at once run one after the other: one champion, a consistent trail. After moving an alias
it is read back; if another writer moved it meanwhile (possible only on a remote store that the
lock does not cover) the record says so and :class:`~mlra.errors.PromotionRefused` is raised.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlra.audit import AuditRecord
from mlra.config import PromotionParams
from mlra.errors import IntegrityError, MlraError, PromotionRefused
from mlra.registry import CHALLENGER, CHAMPION, Registry, _check_text, _now

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
    "rollback",
    "run_gates",
]

AUTOMATIC: Final = "policy:automatic"
GATES: Final = (
    "registered",
    "validation",
    "artifact",
    "champion",
    "overall_gain",
    "slice_regression",
)


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str


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


def evaluate_gates(registry: Registry, version: str | int, policy: PromotionParams) -> GateDecision:
    """Check every gate for ``version`` without changing anything."""
    v = str(registry.version(version).version)
    tags = registry.tags(v)
    results: list[GateResult] = []

    def gate(name: str, ok: bool, detail: str) -> bool:
        results.append(GateResult(name, ok, detail))
        return ok

    if not gate(
        "registered",
        "mlra.audit.registration" in tags and "mlra.adapter_sha256" in tags,
        "registered through mlra (lineage tags and registration record)"
        if "mlra.audit.registration" in tags
        else "no registration record: register versions with mlra.registry.Registry.register",
    ):
        return GateDecision(v, tuple(results))
    validation = tags.get("mlra.validation", "missing")
    if not gate("validation", validation == "passed", f"data validation {validation}"):
        return GateDecision(v, tuple(results))
    try:
        with tempfile.TemporaryDirectory(prefix="mlra-gate-") as tmp:
            fetched = registry.fetch(v, tmp)
        metrics = registry.metrics(v)
        ok, detail = True, f"sha256 {fetched.manifest.sha256[:12]}… verified"
    except IntegrityError as exc:
        ok, detail = False, str(exc)
    if not gate("artifact", ok, detail):
        return GateDecision(v, tuple(results))
    parent = tags.get("mlra.parent_version", "none")
    champion = registry.alias(CHAMPION)
    fresh = (champion or "none") == parent or champion == v
    if not gate(
        "champion",
        fresh,
        f"evaluated against {'v' + parent if parent != 'none' else 'the base model'}"
        + ("" if fresh else f", but the champion is now v{champion}: evaluate it again"),
    ):
        return GateDecision(v, tuple(results))
    reference = f"champion v{parent}" if parent != "none" else "the base model"
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
    actor = _check_text("the actor", actor)
    with registry.locked():
        decision = evaluate_gates(registry, version, policy)
        _record_gate(registry, decision, actor, requested=CHALLENGER)
        v = decision.version
        if decision.passed:
            registry.client.set_registered_model_alias(registry.model, CHALLENGER, v)
        elif registry.alias(CHALLENGER) == v:
            registry.client.delete_registered_model_alias(registry.model, CHALLENGER)
        _refresh(registry, v)
    return decision


def _record_gate(registry: Registry, decision: GateDecision, actor: str, requested: str) -> None:
    outcome = decision.to_dict()
    registry.record(actor, "gate", decision.version, {**outcome, "requested": requested})
    registry.client.set_model_version_tag(
        registry.model, decision.version, "mlra.gate", outcome["outcome"]
    )


def approve(registry: Registry, version: str | int, by: str, reason: str) -> AuditRecord:
    """Record ``by``'s approval of ``version`` for promotion to champion, with ``reason``.

    Only a version whose last gate decision passed can be approved (run the gates first).
    """
    by, reason = _check_text("--by", by), _check_text("--reason", reason)
    with registry.locked():
        v = str(registry.version(version).version)
        tags = registry.tags(v)
        if tags.get("mlra.gate") != "passed":
            raise PromotionRefused(
                f"gate 'approval': v{v} has not passed the gates (last decision: "
                f"{tags.get('mlra.gate', 'none yet')}); run `mlra gate {v}` first"
            )
        if registry.alias(CHAMPION) == v:
            raise PromotionRefused(f"gate 'approval': v{v} is already the champion")
        record = _approve(registry, v, by, reason)
        _refresh(registry, v)
    return record


def _approve(registry: Registry, v: str, by: str, reason: str) -> AuditRecord:
    record = registry.record(by, "approval", v, {"reason": reason, "outcome": "approved"})
    for key, value in (
        ("mlra.approved_by", by),
        ("mlra.approval_reason", reason),
        ("mlra.approved_at", record.time),
    ):
        registry.client.set_model_version_tag(registry.model, v, key, _tag(value))
    return record


def reject(registry: Registry, version: str | int, by: str, reason: str) -> AuditRecord:
    """Record ``by``'s rejection of ``version``: it loses ``challenger`` and cannot be promoted
    (a later approval overrides the rejection, and is recorded as such)."""
    by, reason = _check_text("--by", by), _check_text("--reason", reason)
    with registry.locked():
        v = str(registry.version(version).version)
        if registry.alias(CHAMPION) == v:
            raise PromotionRefused(
                f"gate 'rejection': v{v} is the champion; roll back (`mlra rollback`) instead"
            )
        record = registry.record(by, "rejection", v, {"reason": reason, "outcome": "rejected"})
        for key, value in (
            ("mlra.rejected_by", by),
            ("mlra.rejection_reason", reason),
            ("mlra.rejected_at", record.time),
        ):
            registry.client.set_model_version_tag(registry.model, v, key, _tag(value))
        if registry.alias(CHALLENGER) == v:
            registry.client.delete_registered_model_alias(registry.model, CHALLENGER)
        _refresh(registry, v)
    return record


def promote(
    registry: Registry, version: str | int, policy: PromotionParams, actor: str = "pipeline"
) -> Transition:
    """Make ``version`` the champion, if it passes every gate and is approved (or the policy is
    automatic). Raises :class:`PromotionRefused` naming the gate, after recording the refusal."""
    actor = _check_text("the actor", actor)
    with registry.locked():
        v = str(registry.version(version).version)
        previous = registry.alias(CHAMPION)
        if previous == v:
            raise PromotionRefused(f"gate 'champion': v{v} is already the champion")
        decision = evaluate_gates(registry, v, policy)
        refusal: str | None = None if decision.passed else str(decision)
        tags = registry.tags(v)
        approved_at = tags.get("mlra.approved_at")
        automatic = policy.approval == "automatic" or (
            policy.approval == "first-automatic" and previous is None
        )
        if refusal is None and not automatic:
            if approved_at is None:
                refusal = (
                    f"v{v} refused at gate 'approval': no approval recorded; "
                    f"run `mlra approve {v} --by NAME --reason TEXT`"
                )
            elif approved_at < tags.get("mlra.rolled_back_at", ""):
                refusal = (
                    f"v{v} refused at gate 'approval': it was rolled back at "
                    f"{tags['mlra.rolled_back_at']}, after its approval; approve it again"
                )
            elif approved_at < tags.get("mlra.rejected_at", ""):
                refusal = (
                    f"v{v} refused at gate 'approval': rejected by "
                    f"{tags.get('mlra.rejected_by')!r} after its approval"
                )
        if refusal is not None:
            _record_gate(registry, decision, actor, requested=CHAMPION)
            if decision.passed:  # refused for lack of approval: say so in the trail too
                registry.record(
                    actor,
                    "promotion",
                    v,
                    {"outcome": "refused", "reason": refusal.split(": ", 1)[1]},
                )
            _refresh(registry, v)
            raise PromotionRefused(refusal)
        _record_gate(registry, decision, actor, requested=CHAMPION)
        approver = tags.get("mlra.approved_by", "")
        if automatic:
            approver = AUTOMATIC
            why = (
                "automatic"
                if policy.approval == "automatic"
                else "first-automatic and no champion serves yet"
            )
            _approve(registry, v, AUTOMATIC, f"params.yaml promotion.approval is {why}")
        transition = _move_champion(
            registry, v, previous, actor, "promotion", {"approved_by": approver}
        )
        if registry.alias(CHALLENGER) == v:
            registry.client.delete_registered_model_alias(registry.model, CHALLENGER)
        registry.client.set_model_version_tag(registry.model, v, "mlra.previous_champion",
                                              previous or "none")  # fmt: skip
        registry.client.set_model_version_tag(registry.model, v, "mlra.promoted_at", _now())
        for changed in filter(None, (v, previous)):
            _refresh(registry, changed)
    return transition


def rollback(registry: Registry, actor: str, reason: str = "") -> Transition:
    """Move ``champion`` back to the version it replaced (``mlra.previous_champion``)."""
    actor = _check_text("--by", actor)
    with registry.locked():
        current = registry.alias(CHAMPION)
        if current is None:
            raise PromotionRefused("gate 'rollback': there is no champion to roll back")
        previous = registry.tags(current).get("mlra.previous_champion", "none")
        if previous == "none":
            raise PromotionRefused(
                f"gate 'rollback': champion v{current} has no previous champion to roll back to"
            )
        with tempfile.TemporaryDirectory(prefix="mlra-rollback-") as tmp:
            registry.fetch(previous, tmp)  # never point serving at an artifact that fails to verify
        transition = _move_champion(
            registry, previous, current, actor, "rollback", {"reason": reason, "from": current}
        )
        for key, value in (
            ("mlra.rolled_back_at", transition.record.time),
            ("mlra.rolled_back_by", actor),
            ("mlra.rollback_reason", reason),
        ):
            registry.client.set_model_version_tag(registry.model, current, key, _tag(value))
        for changed in (previous, current):
            _refresh(registry, changed)
    return transition


def _move_champion(
    registry: Registry,
    v: str,
    previous: str | None,
    actor: str,
    action: str,
    details: Mapping[str, Any],
) -> Transition:
    """Point ``champion`` at ``v``, read it back, record the move (with the one it replaced)."""
    registry.client.set_registered_model_alias(registry.model, CHAMPION, v)
    now = registry.alias(CHAMPION)
    outcome = "done" if now == v else f"overwritten: champion is v{now}"
    record = registry.record(
        actor, action, v, {**details, "outcome": outcome, "previous": previous or "none"}
    )
    if now != v:
        raise PromotionRefused(
            f"gate 'champion': another writer moved champion to v{now} while v{v} was promoted; "
            "the registry's lock does not cover this store (see docs/governance.md)"
        )
    return Transition(v, previous, str(details.get("approved_by", actor)), record)


def awaiting_approval(registry: Registry) -> list[str]:
    """Versions that passed the gates and wait for a person: not approved since, not rejected,
    not the champion."""
    champion = registry.alias(CHAMPION)
    out = []
    for mv in registry.versions():
        tags = {str(k): str(v) for k, v in mv.tags.items()}
        if str(mv.version) == champion or tags.get("mlra.gate") != "passed":
            continue
        if "mlra.approved_by" in tags or "mlra.rejected_by" in tags:
            continue
        out.append(str(mv.version))
    return out


def _tag(value: str) -> str:
    from mlra.audit import redact

    return str(redact(value))


def _refresh(registry: Registry, version: str) -> None:
    """Re-render the version's model card; a card that cannot be rendered must not undo a
    decision that is already recorded, so failures are reported in the card instead."""
    try:
        registry.refresh_card(version)
    except MlraError as exc:
        registry.client.update_model_version(
            registry.model, version, description=f"(model card unavailable: {exc})"
        )


def status(registry: Registry) -> dict[str, Any]:
    """Where everything lives and stands: the store, the model, its aliases, versions awaiting
    approval, the last run and the audit trail (verified against the registry's anchors).

    An embedded SQLite store that does not exist yet is reported as empty, not created."""
    exists = registry.exists()
    champion = registry.alias(CHAMPION) if exists else None
    challenger = registry.alias(CHALLENGER) if exists else None
    versions = registry.versions() if exists else []
    last_run = None
    if exists:
        found = registry.client.get_experiment_by_name(registry.experiment)
        if found is not None:
            runs = registry.client.search_runs(
                [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
            )
            if runs:
                info = runs[0].info
                last_run = {
                    "run_id": info.run_id,
                    "name": info.run_name,
                    "status": info.status,
                    "started": _ms_to_iso(info.start_time),
                }
    anchors = registry.anchors()
    verification = registry.trail.verify(anchors)
    return {
        "tracking_uri": registry.location,
        "registry_exists": exists,
        "experiment": registry.experiment,
        "model": registry.model,
        "versions": len(versions),
        "latest_version": str(versions[-1].version) if versions else None,
        "champion": champion,
        "challenger": challenger,
        "awaiting_approval": awaiting_approval(registry) if exists else [],
        "last_run": last_run,
        "lock": {"path": str(registry.lock_path), "shared": registry.lock_is_shared},
        "audit": {
            "path": registry.trail.location,
            "intact": verification.intact,
            "records": verification.records,
            "anchors": len(anchors),
            "reason": verification.reason or None,
        },
    }


def _ms_to_iso(ms: int | None) -> str | None:
    from datetime import UTC, datetime

    return (
        None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    )


def load_policy(path: str = "params.yaml") -> PromotionParams:
    """params.yaml's ``promotion`` section, checked (:class:`mlra.config.PromotionParams`)."""
    from mlra.config import load_params

    return load_params(path).promotion
