"""The modular half of ``mlra-retrain`` (``modules.mode: modular``; docs/modules.md).

After ingest → prepare → validate (shared with the single-adapter retrain, :mod:`flows.retrain`):
the modules whose domain received enough new feedback train together in one routed pass, with
the router; each is evaluated against its own champion on its own golden slice, registered as a
version of its own model, gated, and promoted on its own. The bundle that would serve is then
evaluated on every slice, routed by the new router; the router enters the bundle only when the
bundle gates (the source domain not forgotten, router accuracy per domain) pass. A ``bundle``
record in the audit trail names what serves afterwards.

A module whose promotion needs a person (``promotion.approval``) stays ``challenger``: the run
does not pause per module; ``mlra approve V --module M --by … --reason …`` promotes it later and
records the new bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flows import tasks
from mlra import modules, steps
from mlra.errors import PromotionRefused
from mlra.governance import version_label

if TYPE_CHECKING:
    from flows.retrain import RetrainSummary
    from mlra.config import Params

__all__ = ["run_modules"]


def run_modules(
    p: Params, summary: RetrainSummary, actor: str, progress_bar: bool, log: Any
) -> None:
    """Train, evaluate, register, gate and promote the due modules; record the bundle."""
    from mlra.registry import CHAMPION

    summary.tracking_uri = steps.registry_for(p).location
    by_domain = modules.feedback_rows_by_domain(p)
    verdicts = modules.modules_due(p, by_domain)
    summary.modules = [
        {"module": v.module, "due": v.due, "why": v.reason, "new_rows": v.new_rows}
        for v in verdicts
    ]
    due = [v.module for v in verdicts if v.due]
    rows = {row["module"]: row for row in summary.modules}
    if not due:
        summary.outcome = "not_due"
        summary.decision = "no module had enough new feedback: nothing was trained"
        return
    fetch = tasks.with_retries(tasks.fetch_champion, p)
    before = {m: fetch(p, m) for m in p.modules.names(p.data)}
    for m, v in before.items():
        rows[m]["champion_before"] = version_label(v)
    trained = tasks.with_retries(tasks.train_modules, p)(
        p, actor, due, summary.feedback_rows, by_domain, progress_bar
    )
    summary.train_seconds = round(sum(trained.seconds.values()), 1)
    summary.steps = trained.steps
    summary.training_run_id = trained.mlflow_run_id

    report = p.validation.report_dir + "/report.json"
    passing: dict[str, str] = {}
    for m, result in trained.modules.items():
        evaluation, plots = tasks.evaluate_module(p, m, before[m], actor)
        scores = evaluation.slices[evaluation.overall].scores
        rows[m]["macro-F1"] = {k: round(s.macro_f1, 3) for k, s in scores.items()}
        version, _run = tasks.with_retries(tasks.register_module, p)(
            p, m, result.adapter_sha256, _path(report), plots, actor
        )
        decision = tasks.with_retries(tasks.gate_version, p)(p, version, actor, m)
        rows[m].update(version=version, gate=str(decision))
        if decision.passed:
            passing[m] = version
        else:
            rows[m]["outcome"] = "gate_failed"

    serving = {m: ("candidate" if m in passing else "champion") for m in p.modules.names(p.data)}
    bundle = tasks.evaluate_bundle(p, serving, actor)
    summary.bundle_gates = [str(g) for g in bundle.gates]
    summary.overall = {k: round(v, 4) for k, v in bundle.overall.items()}
    summary.slices = bundle.table

    promoted = []
    for m, version in passing.items():
        if steps.needs_person(p.promotion, before[m]):
            steps.registry_for(p, m).record(
                actor, "approval_request", version,
                {"timeout_s": 0, "outcome": "not waiting (modular retrain)"},
            )  # fmt: skip
            rows[m]["outcome"] = "awaiting_approval"
            continue
        try:
            tasks.with_retries(tasks.promote_version, p)(p, version, actor, m)
        except PromotionRefused as exc:
            rows[m].update(outcome="promotion_refused", why=str(exc))
            continue
        rows[m]["outcome"] = "promoted"
        promoted.append(m)
    for m in p.modules.names(p.data):
        rows[m]["champion_after"] = version_label(steps.registry_for(p, m).alias(CHAMPION))
        rows[m].setdefault("outcome", "kept")

    if promoted or bundle.router_accepted:
        changed = ", ".join(promoted) or "none"
        router = "replaced" if bundle.router_accepted else "kept (the new one failed its gates)"
        record = tasks.with_retries(tasks.record_bundle, p)(
            p, actor, f"retrain: modules promoted: {changed}; router {router}",
            bundle.router_dir if bundle.router_accepted else None,
            bundle.router_sha256 if bundle.router_accepted else None,
        )  # fmt: skip
        summary.bundle = str(record)
    outcomes = [rows[m]["outcome"] for m in due]
    summary.outcome = next(
        (o for o in ("promoted", "awaiting_approval", "promotion_refused") if o in outcomes),
        "gate_failed",
    )
    summary.decision = "; ".join(f"{m}: {rows[m]['outcome']}" for m in due)
    log.info("modules: %s", summary.decision)


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text)
