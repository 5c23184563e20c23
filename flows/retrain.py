"""The ``mlra-retrain`` flow: ingest → prepare → validate → train → evaluate → register → gate →
approval → promote, as thin tasks over mlra functions (:mod:`flows.tasks`).

Outcomes (``summary["outcome"]``), each recorded in the audit trail and in the run's Prefect
artifacts (a Markdown summary, a table of per-slice metrics):

- ``validation_failed``: the flow run ends Failed (:class:`~mlra.errors.ValidationFailed`) after
  publishing the report; nothing is trained or registered.
- ``gate_failed``: the version is registered for review, nothing is promoted.
- ``promoted``: the version is the champion (approved by a person, or by the policy).
- ``awaiting_approval``: the version passed the gates (``challenger``) and a person must approve it;
  the flow waited ``pipeline.approval_timeout_s`` for an answer (``mlra approve V --by … --reason
  …``, which resumes the paused run, or the form in the Prefect UI) and none came: ``mlra
  approve`` still works, and promotes.
- ``rejected``: a person answered the paused flow with a rejection.
- ``promotion_refused``: the promotion itself was refused (recorded with its reason), e.g. because
  another run promoted a version meanwhile and this one no longer beats the new champion.

The flow run's name and tags say the outcome (``v3-promoted``; tags ``promoted``, ``version:3``,
``model:NAME``) and so does its final state (``Promoted``, ``Gate failed``, …: type COMPLETED,
the decision as its message; :mod:`flows.approval`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed

from flows import approval, tasks
from mlra import steps
from mlra.config import Params, load_params
from mlra.data.ingest import pending
from mlra.errors import PromotionRefused
from mlra.governance import version_label

__all__ = [
    "Approval",
    "RetrainSummary",
    "mlflow_link",
    "pause_message",
    "retrain",
    "summary_markdown",
]

SUMMARY_KEY = "mlra-retrain-summary"
SLICES_KEY = "mlra-slice-metrics"


class Approval(RunInput):
    """What a person answers to a retrain paused for approval (a form in the Prefect UI)."""

    approve: bool
    by: str
    reason: str


@dataclasses.dataclass
class RetrainSummary:
    """What one retrain did; returned by the flow and published as its Markdown artifact."""

    outcome: str = "running"
    simulated: str | None = None
    ingested: dict[str, int] = dataclasses.field(default_factory=dict)
    rows: dict[str, int] = dataclasses.field(default_factory=dict)
    feedback_rows: int = 0
    validation: str | None = None
    validation_failed: list[str] = dataclasses.field(default_factory=list)
    validation_report: str | None = None
    champion_before: str | None = None
    version: str | None = None
    run_id: str | None = None  # the registration's MLflow run
    training_run_id: str | None = None  # the training run (Lightning's MLflow logger)
    adapter_sha256: str | None = None
    train_seconds: float | None = None
    steps: int | None = None
    overall: dict[str, float] = dataclasses.field(default_factory=dict)
    slices: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    gate: str | None = None
    gate_detail: str | None = None
    decision: str | None = None
    champion_after: str | None = None
    tracking_uri: str | None = None
    model: str | None = None
    flow_run_id: str | None = None
    # modules.mode modular: one row per module (due, why, version, gate, outcome, champions)
    modules: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    bundle: str | None = None  # the bundle record written at the end (what serves now)
    bundle_gates: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@flow(name="mlra-retrain", log_prints=True)
def retrain(
    params: str = "params.yaml",
    inbox: str | None = None,
    simulate: bool | None = None,
    actor: str = "pipeline",
    progress_bar: bool = False,
    approval_timeout_s: int | None = None,
) -> dict[str, Any]:
    """Retrain on the feedback in ``inbox`` (default ``data.inbox_dir``) and decide on the new
    version. ``simulate``: write the next simulated feedback batch when the inbox holds nothing
    new (default ``pipeline.simulate_when_empty``). ``approval_timeout_s`` overrides
    ``pipeline.approval_timeout_s``. Returns :class:`RetrainSummary` as a dict."""
    p = load_params(params)
    if approval_timeout_s is not None:
        p = dataclasses.replace(
            p, pipeline=dataclasses.replace(p.pipeline, approval_timeout_s=approval_timeout_s)
        )
    log = get_run_logger()
    summary = RetrainSummary(model=p.registry.model_name)
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        summary.flow_run_id = str(context.flow_run.id)
    inbox_dir = Path(inbox or p.data.inbox_dir)
    try:
        _run(p, summary, inbox_dir, simulate, actor, progress_bar, log)
    finally:
        _publish(summary)
        _label(summary, log)
    # a returned state is the run's final state (callers get its data, the summary): its name
    # says the outcome in the Prefect UI, its message the decision
    return Completed(  # type: ignore[return-value]
        data=summary.to_dict(),
        name=approval.STATE_NAMES.get(summary.outcome, "Completed"),
        message=summary.decision,
    )


def _run(
    p: Params,
    summary: RetrainSummary,
    inbox: Path,
    simulate: bool | None,
    actor: str,
    progress_bar: bool,
    log: Any,
) -> None:
    from mlra.registry import CHAMPION

    # -- data: ingest, prepare, validate ------------------------------------------------------
    simulating = p.pipeline.simulate_when_empty if simulate is None else simulate
    if simulating and not pending([inbox], p.data.feedback_dir):
        written = tasks.simulate_feedback(p, inbox)
        summary.simulated = str(written) if written else None
    ingested = tasks.ingest_feedback(p, inbox, actor)
    summary.ingested = {
        "read": ingested.read,
        "accepted": ingested.accepted,
        "quarantined": ingested.quarantined,
    }
    summary.feedback_rows = steps.accepted_rows(p)
    prepared = tasks.prepare_splits(p)
    summary.rows = dict(prepared.counts)
    report_dir = Path(p.validation.report_dir)
    report = tasks.validate_data(p, actor)
    summary.validation = "passed" if report.passed else "failed"
    summary.validation_report = str(report_dir / "report.json")
    if not report.passed:
        summary.outcome = "validation_failed"
        summary.validation_failed = [f"{e.check}: {e.name}" for e in report.failed]
        report.raise_if_failed()  # the run ends Failed; nothing is trained

    if p.modules.mode == "modular":
        from flows.modular import run_modules

        run_modules(p, summary, actor, progress_bar, log)
        return

    # -- train and evaluate against the registry's champion -------------------------------------
    registry = tasks.registry_for(p)
    summary.tracking_uri = registry.location
    summary.champion_before = tasks.with_retries(tasks.fetch_champion, p)(p)
    # retried too: its MLflow logger needs the server; a retry resumes from the last checkpoint
    trained = tasks.with_retries(tasks.train_adapter, p)(
        p, actor, summary.feedback_rows, progress_bar
    )
    summary.adapter_sha256 = trained.adapter_sha256
    summary.training_run_id = trained.mlflow_run_id
    summary.train_seconds = round(sum(trained.seconds.values()), 1)
    summary.steps = int(trained.metadata["steps"])
    evaluation, plots = tasks.evaluate_candidate(p, summary.champion_before, actor)
    overall = evaluation.slices[evaluation.overall].scores
    summary.overall = {m: round(overall[m].macro_f1, 4) for m in evaluation.models}
    summary.slices = [
        {
            "slice": sl.name + (" (few rows in a class)" if sl.noisy else ""),
            "rows": sl.scores["candidate"].support,
            **{f"{m} macro-F1": round(sl.scores[m].macro_f1, 3) for m in evaluation.models},
            **{
                f"Δ vs {m}": round(d, 3)
                for m in ("base", "champion")
                if (d := sl.delta(m)) is not None
            },
        }
        for sl in evaluation.slices.values()
    ]

    # -- register, gate, approval, promote ----------------------------------------------------
    summary.version, summary.run_id = tasks.with_retries(tasks.register_version, p)(
        p, trained, report_dir / "report.json", plots, actor
    )
    decision = tasks.with_retries(tasks.gate_version, p)(p, summary.version, actor)
    summary.gate = decision.to_dict()["outcome"]
    summary.gate_detail = str(decision)
    if not decision.passed:
        summary.outcome = "gate_failed"
        summary.decision = f"registered for review, not promoted: {decision}"
        summary.champion_after = summary.champion_before
        return
    policy = p.promotion
    needs_person = steps.needs_person(policy, summary.champion_before)
    if needs_person:
        answer = _wait_for_approval(p, summary.version, actor, log)
        if answer is None:
            summary.outcome = "awaiting_approval"
            summary.decision = (
                f"v{summary.version} is challenger and waits for a person: "
                f"`mlra approve {summary.version} --by NAME --reason TEXT` promotes it"
            )
            summary.champion_after = summary.champion_before
            return
        tasks.record_answer(p, summary.version, answer.approve, answer.by, answer.reason)
        if not answer.approve:
            summary.outcome = "rejected"
            summary.decision = f"rejected by {answer.by}: {answer.reason}"
            summary.champion_after = summary.champion_before
            return
    try:
        move = tasks.with_retries(tasks.promote_version, p)(p, summary.version, actor)
    except PromotionRefused as exc:  # e.g. another run promoted meanwhile: recorded, not a crash
        summary.outcome = "promotion_refused"
        summary.decision = f"registered, not promoted: {exc}"
        summary.champion_after = tasks.registry_for(p).alias(CHAMPION)
        return
    summary.outcome = "promoted"
    summary.decision = f"v{move.version} is champion (approved by {move.approver})"
    summary.champion_after = registry.alias(CHAMPION)


def _wait_for_approval(p: Params, version: str, actor: str, log: Any) -> Approval | None:
    """Pause the flow run for a person's answer; None when none came within the timeout."""
    timeout = p.pipeline.approval_timeout_s
    registry = tasks.registry_for(p)
    registry.record(
        actor,
        "approval_request",
        version,
        {"timeout_s": timeout, "outcome": "waiting" if timeout else "not waiting (timeout 0)"},
    )
    if timeout == 0:
        return None
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        run_id = context.flow_run.id
        try:  # the tags are how `mlra approve` finds this run
            approval.label_run(
                run_id,
                name=f"v{version}-{approval.AWAITING}",
                add=("mlra", approval.AWAITING, approval.version_tag(version),
                     approval.model_tag(p.registry.model_name)),
            )  # fmt: skip
        except Exception as exc:  # then only the Prefect UI's form can answer it
            log.warning("could not tag the paused run for `mlra approve`: %s", exc)
        log.info(pause_message(version, p.registry.model_name, str(run_id), timeout))
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout)
        approval.record_pause(p.registry.model_name, version, str(run_id), deadline)
    description = (
        f"**Approve v{version} of {p.registry.model_name} as champion?** It passed every gate; "
        "its model card is the version's description in the MLflow registry."
    )
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=description),
            timeout=timeout,
            poll_interval=max(1, min(10, timeout // 4)),
        )
    except FlowPauseTimeout:
        registry.record(actor, "approval_request", version, {"outcome": "timed out"})
        return None
    finally:
        approval.forget_pause(p.registry.model_name, version)
    return answer


def pause_message(version: str, model: str, flow_run_id: str, timeout_s: int) -> str:
    """What a paused retrain prints: the deadline, the run, where to see it, how to answer."""
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout_s)
    ui = "" if approval.configured_api() else (
        "  (run `mlra ui` to serve it: Prefect's temporary server has no UI)"
    )  # fmt: skip
    return "\n".join(
        [
            f"v{version} of {model} passed the gates and waits for a person's approval until "
            f"{deadline:%Y-%m-%d %H:%M:%S} UTC ({timeout_s} s from now).",
            f"  flow run: {flow_run_id} (v{version}-{approval.AWAITING})",
            f"  see it:   {approval.run_link(flow_run_id)}{ui}",
            f"  answer:   mlra approve {version} --by NAME --reason TEXT",
            f"        or: mlra reject {version} --by NAME --reason TEXT",
            "  (after the deadline `mlra approve` still records the approval and promotes)",
        ]
    )


def _label(summary: RetrainSummary, log: Any) -> None:
    """Name and tag the flow run by its outcome (``v3-promoted``; tags ``promoted``, …)."""
    if summary.flow_run_id is None or summary.outcome not in approval.OUTCOMES:
        return
    tags = ["mlra", summary.outcome]
    if summary.version:
        tags.append(approval.version_tag(summary.version))
    if summary.model:
        tags.append(approval.model_tag(summary.model))
    stale = tuple(o for o in approval.OUTCOMES if o != summary.outcome)
    name = f"v{summary.version}-{summary.outcome}" if summary.version else summary.outcome
    try:
        approval.label_run(summary.flow_run_id, name=name, add=tuple(tags), remove=stale)
    except Exception as exc:  # a label is a convenience: it never fails a decided run
        log.warning("could not name the flow run after its outcome: %s", exc)


def _publish(summary: RetrainSummary) -> None:
    """The run's Prefect artifacts: the Markdown summary and the per-slice table."""
    create_markdown_artifact(
        markdown=summary_markdown(summary),
        key=SUMMARY_KEY,
        description=f"mlra retrain: {summary.outcome}",
    )
    if summary.slices:
        create_table_artifact(
            table=summary.slices,
            key=SLICES_KEY,
            description="golden-set macro-F1 per slice: base, candidate, champion",
        )


def summary_markdown(s: RetrainSummary) -> str:
    """The run summary a reviewer reads in the Prefect UI."""
    lines = [f"# mlra retrain: **{s.outcome}**", ""]
    if s.decision:
        lines += [s.decision, ""]
    lines += ["## Data", ""]
    if s.simulated:
        lines.append(f"- simulated feedback batch: `{s.simulated}`")
    if s.ingested:
        lines.append(
            f"- ingested: {s.ingested['read']} rows read, {s.ingested['accepted']} accepted, "
            f"{s.ingested['quarantined']} quarantined (each with its reason)"
        )
    lines.append(f"- accepted feedback rows in the store: {s.feedback_rows}")
    if s.rows:
        lines.append("- splits: " + ", ".join(f"{k} {v:,}" for k, v in s.rows.items()))
    if s.validation:
        lines.append(
            f"- validation (Great Expectations): **{s.validation}**, `{s.validation_report}`"
        )
    lines += [f"  - failed: {name}" for name in s.validation_failed]
    if s.version or s.overall:
        lines += ["", "## Model", ""]
        lines.append(
            f"- champion before: {version_label(s.champion_before)}; "
            f"after: {version_label(s.champion_after)}"
        )
        if s.overall:
            lines.append(
                "- overall target-domain macro-F1: "
                + ", ".join(f"{m} {v:.3f}" for m, v in s.overall.items())
            )
        if s.steps is not None:
            lines.append(f"- training: {s.steps} steps, {s.train_seconds} s")
        if s.gate:
            lines.append(f"- gates: {s.gate_detail}")
    if s.modules:
        lines += ["", "## Modules", "", "| module | due | version | gate | outcome | champion |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for row in s.modules:
            lines.append(
                f"| {row['module']} | {'yes' if row['due'] else 'no'}: {row['why']} | "
                f"{version_label(row.get('version'))} | {row.get('gate', '')} | "
                f"{row.get('outcome', '')} | {row.get('champion_before', '')} → "
                f"{row.get('champion_after', '')} |"
            )
        lines += [f"- bundle gate: {g}" for g in s.bundle_gates]
        if s.bundle:
            lines.append(f"- serving now: {s.bundle}")
    if s.version:
        lines += [
            "",
            "## Where to look",
            "",
            f"- MLflow: model `{s.model}` version {s.version}, run `{s.run_id}` (training run "
            f"`{s.training_run_id}`) in {s.tracking_uri}",
            f"  - {mlflow_link(s.tracking_uri, s.model, s.version)}",
            f"- the audit trail: `mlra audit show --version {s.version}`; `mlra audit verify`",
        ]
    return "\n".join(lines) + "\n"


def mlflow_link(tracking_uri: str | None, model: str | None, version: str) -> str:
    """A link to the version in the MLflow UI (for a local store: where `mlra ui` serves it)."""
    page = f"#/models/{model}/versions/{version}"
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} (`mlra ui` serves it, on {tracking_uri})"
