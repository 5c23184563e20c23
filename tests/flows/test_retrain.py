"""The retrain flow end to end: real Prefect runs (a temporary server), a real MLflow store, real
Great Expectations validation and real training of the packaged MiniLM for a few steps.

One test walks a project through its life: the scheduled check retrains (nothing trained yet),
the first version becomes champion by the first-automatic policy, a check with no new feedback
retrains nothing, a version that fails a gate is registered for review only, and a version that
passes waits in a paused flow run until a person's answer resumes it. Others cover a bad feedback
batch (validation fails, nothing trained). MLflow unreachable mid-run, then back within the
retries, is tested against real servers in tests/services/test_retrain_deployment.py.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.flow_helpers import small_params

pytestmark = pytest.mark.integration

LINEAGE_TAGS = (
    "mlra.git_commit",
    "mlra.data_hash",
    "mlra.params_hash",
    "mlra.base_fingerprint",
    "mlra.adapter_sha256",
    "mlra.validation",
    "mlra.parent_version",
    "mlra.mlra_version",
    "mlra.audit.registration",
)


def _artifacts(flow_run_id: str) -> dict[str, Any]:
    """The Prefect artifacts of a flow run, by key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    return {a.key: a for a in found}


def _registry() -> Any:
    from mlra.registry import Registry

    return Registry(model="mlra-sentiment", experiment="mlra-retraining")


def _actions() -> list[str]:
    from mlra.audit import default_trail

    return [r.action for r in default_trail().records()]


def _answer_when_paused(
    version: str, approve: bool, by: str, reason: str, timeout: float = 240.0
) -> threading.Thread:
    """A reviewer: waits until a retrain pauses for ``version``, then answers it as ``mlra
    approve`` / ``mlra reject`` do (:func:`flows.approval.resume_paused_run`)."""
    from flows.approval import paused_run, resume_paused_run

    def reviewer() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if paused_run(version) is not None:
                record = Path(".mlra") / "paused" / f"mlra-sentiment-v{version}.json"
                assert record.is_file()  # how `mlra approve` finds the run's own server
                answered = resume_paused_run(version, approve, by, reason, "mlra-sentiment")
                assert answered is not None
                return
            time.sleep(1)

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    return thread


def _flow_run(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id))


def _says_outcome(flow_run_id: str, version: str, outcome: str, state: str) -> None:
    """The run's name, tags and final state say what it decided."""
    run = _flow_run(flow_run_id)
    assert run.name == f"v{version}-{outcome}", run.name
    assert {outcome, f"version:{version}", "model:mlra-sentiment"} <= set(run.tags), run.tags
    assert "awaiting_approval" not in run.tags or outcome == "awaiting_approval"
    assert run.state.is_completed() and run.state.name == state, run.state


def test_a_project_through_its_retrains(project: Path) -> None:
    from flows import retrain, retrain_if_due
    from mlra.audit import default_trail
    from mlra.registry import CHALLENGER, CHAMPION, audit_anchors

    params = small_params(project, pipeline={"min_new_rows": 50})
    inbox = project / "data" / "inbox"

    # 1. nothing trained yet and a week of feedback waiting: the scheduled check retrains
    from mlra.config import load_params
    from mlra.data.feedback import simulate_next

    simulate_next(load_params(params), inbox)
    checked = retrain_if_due(params=str(params))
    assert checked["due"] is True and checked["new_rows"] >= 50
    first = checked["retrain"]
    assert first["outcome"] == "promoted", first
    assert first["version"] == "1" and first["champion_before"] is None
    registry = _registry()
    assert registry.alias(CHAMPION) == "1"
    tags = registry.tags("1")
    assert all(tags.get(t) for t in LINEAGE_TAGS), sorted(tags)
    assert tags["mlra.validation"] == "passed" and tags["mlra.parent_version"] == "none"
    assert tags["mlra.approved_by"] == "policy:automatic"
    artifacts = _artifacts(first["flow_run_id"])
    assert "**promoted**" in artifacts["mlra-retrain-summary"].data
    table = json.loads(artifacts["mlra-slice-metrics"].data)
    assert {row["slice"].split(" ")[0] for row in table} >= {"airline", "targets", "apple"}
    assert "champion macro-F1" not in table[0]  # no champion to compare with yet
    _says_outcome(first["flow_run_id"], "1", "promoted", "Promoted")

    # 2. no new feedback: the check retrains nothing
    again = retrain_if_due(params=str(params), inbox=str(inbox))
    assert again == {"due": False, "new_rows": 0}

    # 3. a new batch, but the gate asks for more than it can gain: registered, not promoted
    strict = small_params(project, promotion={"min_overall_gain": 1.0})
    second = retrain(params=str(strict))
    assert second["outcome"] == "gate_failed", second
    assert second["champion_before"] == "1" and registry.alias(CHAMPION) == "1"
    assert registry.tags("2")["mlra.gate"] == "refused:overall_gain"
    assert registry.tags("2")["mlra.parent_version"] == "1"
    assert "champion macro-F1" in second["slices"][0]  # compared with the champion
    assert registry.alias(CHALLENGER) is None
    _says_outcome(second["flow_run_id"], "2", "gate_failed", "Gate failed")

    # 4. a version that passes needs a person now: the run pauses, a reviewer answers
    waiting = small_params(project, pipeline={"approval_timeout_s": 240})
    reviewer = _answer_when_paused("3", True, "dana", "slices hold up")
    third = retrain(params=str(waiting))
    reviewer.join(timeout=5)
    assert third["outcome"] == "promoted", third
    _says_outcome(third["flow_run_id"], "3", "promoted", "Promoted")
    assert registry.alias(CHAMPION) == third["version"] == "3"
    tags = registry.tags("3")
    assert tags["mlra.approved_by"] == "dana" and tags["mlra.previous_champion"] == "1"

    # every step is in the trail, and the trail verifies against the registry's anchors
    actions = _actions()
    for action in ("ingest", "validation", "training", "evaluation", "registration", "gate",
                   "approval_request", "approval", "promotion", "retrain_check"):  # fmt: skip
        assert action in actions, action
    trail = default_trail()
    verdict = trail.verify(audit_anchors(trail))
    assert verdict.intact, verdict


def test_a_bad_batch_fails_validation_and_trains_nothing(project: Path) -> None:
    from flows import retrain

    params = small_params(project)
    inbox = project / "data" / "inbox"
    inbox.mkdir(parents=True)
    rows = [  # well-formed rows that all say "positive": the batch drifts far from training
        {"text": f"what a game, number {i} of the season", "label": "positive",
         "domain": "nfl", "source": "operator:ana", "created_at": "2026-02-01T10:00:00Z"}
        for i in range(60)
    ] + [  # and rows ingest must quarantine
        {"text": "   ", "label": "positive", "source": "operator:ana",
         "created_at": "2026-02-01T10:00:00Z"},
        {"text": "fine I guess", "label": "meh", "source": "operator:ana",
         "created_at": "2026-02-01T10:00:00Z"},
    ]  # fmt: skip
    (inbox / "feedback-bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    state = retrain(params=str(params), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert type(error).__name__ == "ValidationFailed" and "drift" in str(error)
    assert not (project / "artifacts" / "candidate").exists()  # nothing trained
    assert not _registry().versions()
    actions = _actions()
    assert "validation" in actions and "training" not in actions
    from mlra.audit import default_trail

    ingest = next(r for r in default_trail().records() if r.action == "ingest")
    assert ingest.details["accepted"] == 60 and ingest.details["quarantined"] == 2
    summary = _artifacts(str(state.state_details.flow_run_id))["mlra-retrain-summary"].data
    assert "validation_failed" in summary and "drift" in summary
