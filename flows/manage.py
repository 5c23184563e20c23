"""Flows for manual use and for the schedule: promote, roll back, and retrain when enough new
feedback arrived (``mlra-retrain-if-due``, what ``mlra schedule`` serves on its cron)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import tasks
from flows.retrain import retrain
from mlra import steps
from mlra.config import load_params
from mlra.governance import version_label

__all__ = ["promote_flow", "retrain_if_due", "rollback_flow"]


@flow(name="mlra-promote", log_prints=True)
def promote_flow(version: str, by: str, params: str = "params.yaml") -> dict[str, Any]:
    """Make ``version`` the champion: the gates again, and an approval unless the policy is
    automatic (``mlra approve`` records one). Refusals end the run Failed, naming the gate."""
    p = load_params(params)
    move = tasks.with_retries(tasks.promote_version, p)(p, version, by)
    was = version_label(move.previous)
    text = f"v{move.version} is champion (was {was}; approved by {move.approver})"
    create_markdown_artifact(markdown=f"# mlra promote\n\n{text}\n", key="mlra-promotion")
    return {"champion": move.version, "previous": move.previous, "approver": move.approver}


@flow(name="mlra-rollback", log_prints=True)
def rollback_flow(by: str, reason: str, params: str = "params.yaml") -> dict[str, Any]:
    """Move ``champion`` back to the version it replaced."""
    p = load_params(params)
    move = tasks.with_retries(tasks.rollback_champion, p)(p, by, reason)
    text = f"champion is v{move.version} again (was v{move.previous}); by {by}: {reason}"
    create_markdown_artifact(markdown=f"# mlra rollback\n\n{text}\n", key="mlra-rollback")
    return {"champion": move.version, "previous": move.previous}


@flow(name="mlra-retrain-if-due", log_prints=True)
def retrain_if_due(
    params: str = "params.yaml", inbox: str | None = None, actor: str = "schedule"
) -> dict[str, Any]:
    """Ingest what arrived; retrain (the ``mlra-retrain`` flow, as a subflow) when at least
    ``pipeline.min_new_rows`` accepted feedback rows arrived since the newest trained version."""
    p = load_params(params)
    log = get_run_logger()
    inbox_dir = Path(inbox or p.data.inbox_dir)
    tasks.ingest_feedback(p, inbox_dir, actor)
    check = steps.retrain_check(p, actor)  # the rule, and its audit record
    verdict = str(check)
    log.info(verdict)
    create_markdown_artifact(
        markdown=f"# mlra retrain check\n\n{verdict}\n", key="mlra-retrain-check"
    )
    if not check.due:
        return {"due": False, "new_rows": check.new_rows}
    result = retrain(params=params, inbox=str(inbox_dir), simulate=False, actor=actor)
    return {"due": True, "new_rows": check.new_rows, "retrain": result}
