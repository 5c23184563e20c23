"""The retrain flow as a Prefect deployment, run by the process worker against the Prefect and
MLflow servers: two retrains at once, and the MLflow server restarted while they run.

One test does all three (the flow is the costliest thing here: a real, tiny retrain of MiniLM
takes a minute of CPU, and CI has two cores). It checks that:

- both flow runs, started by the worker from a deployment, complete and log to the MLflow server
  over HTTP (artifacts through its proxy);
- the MLflow server, stopped for real (by PID) when the first run reaches ``evaluate`` and started
  again, is down while a run talks to it: the run retries and completes;
- nothing is half-registered or registered twice: exactly two versions, each with every lineage
  tag, a gate decision and a registration record that matches its artifact; the audit trail in
  Postgres verifies against every anchor the registry holds.

The deployment is registered here through Prefect's API (the flow's entrypoint in this checkout, a
pull step that enters the run's project folder), so each run works in its own folder.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.flow_helpers import small_params
from tests.services.conftest import REPO, Services

pytestmark = pytest.mark.services

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _deploy(client: Any, pool: str, name: str) -> Any:
    flow_id = client.create_flow_from_name("mlra-retrain")
    return client.create_deployment(
        flow_id=flow_id,
        name=name,
        entrypoint=f"{REPO / 'flows' / 'retrain.py'}:retrain",
        work_pool_name=pool,
        pull_steps=[
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $MLRA_PROJECT_DIR }}"
                }
            }
        ],
        enforce_parameter_schema=False,
    )


def _task_runs(client: Any, flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return list(
        client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    )


def _outcome(client: Any, flow_run_id: Any) -> str:
    """The flow's outcome, from the Markdown summary it publishes as a Prefect artifact."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    for artifact in found:
        text = str(artifact.data or "")
        if text.startswith("# mlra retrain: **"):
            return text.split("**")[1]
    return "no summary"


def test_two_deployment_runs_at_once_survive_an_mlflow_restart(
    services: Services, project: dict[str, Any], tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from mlra.audit import open_trail
    from mlra.registry import LINEAGE_TAGS, Registry

    model, experiment = project["model"], project["experiment"]
    roots = []
    for i in range(2):  # two projects (checkouts) on the worker's machine, one model
        root = tmp_path / f"checkout-{i}"
        root.mkdir()
        small_params(
            root,
            registry={"model_name": model, "experiment": experiment},
            # both pass the gates; a person must approve (none waits): deterministic outcomes
            promotion={"approval": "manual"},
            pipeline={"approval_timeout_s": 0, "retries": 4, "retry_delay_s": 5.0},
        )
        roots.append(root)

    with temporary_settings({PREFECT_API_URL: services.prefect_api}), _client() as client:
        deployment = _deploy(
            client, services.env["MLRA_WORK_POOL"], f"retrain-{uuid.uuid4().hex[:6]}"
        )
        runs = [
            client.create_flow_run_from_deployment(
                deployment,
                parameters={"params": str(root / "params.yaml")},
                job_variables={
                    "env": {
                        **project["env"],  # the servers, this test's trail and MLRA_HOME
                        "MLRA_PROJECT_DIR": str(root),
                        "PYTHONPATH": str(REPO),
                    }
                },
            )
            for root in roots
        ]
        # wait for the first run to reach `evaluate`, then stop MLflow and start it again
        deadline = time.monotonic() + 900
        down_at = ready_at = None
        while time.monotonic() < deadline:
            states = [client.read_flow_run(r.id).state_type.value for r in runs]
            if down_at is None:
                names = {
                    t.name.split("-")[0]
                    for r in runs
                    for t in _task_runs(client, r.id)
                    if t.state_type is not None and t.state_type.value == "RUNNING"
                }
                if "evaluate" in names:
                    down_at = time.time()
                    stopped = services.stop("mlflow")
                    assert "stopped" in stopped or "killed" in stopped, stopped
                    time.sleep(5)  # down for a while: connections are refused
                    services.start("mlflow")
                    ready_at = time.time()
            if all(s in FINAL for s in states):
                break
            time.sleep(2)
        states = [client.read_flow_run(r.id).state_type.value for r in runs]
        outcomes = [_outcome(client, r.id) for r in runs]
        tasks = {r.id: _task_runs(client, r.id) for r in runs}

    assert states == ["COMPLETED", "COMPLETED"], (states, outcomes, services.logs("worker"))
    assert outcomes == ["awaiting_approval", "awaiting_approval"], outcomes
    assert down_at is not None and ready_at is not None, "no run reached evaluate"
    # the restart really struck a run: a registry task ran while the server was down
    struck = [
        t
        for ts in tasks.values()
        for t in ts
        if t.name.split("-")[0] in ("register", "gate")
        and t.start_time is not None
        and t.start_time.timestamp() < ready_at
    ]
    assert struck, "no registry task started while MLflow was down; the restart came too late"

    # nothing half-registered, nothing registered twice
    registry = Registry(
        services.mlflow, model=model, experiment=experiment, trail=open_trail(project["trail"])
    )
    versions = registry.versions()
    assert [str(v.version) for v in versions] == ["1", "2"]
    assert len({v.run_id for v in versions}) == 2
    for mv in versions:
        tags = registry.tags(mv.version)
        assert set(LINEAGE_TAGS) <= set(tags), set(LINEAGE_TAGS) - set(tags)
        assert tags["mlra.gate"] == "passed"
        assert mv.source.startswith("mlflow-artifacts:/"), mv.source
        assert registry.fetch(mv.version, tmp_path / f"v{mv.version}").audit_checked
    assert registry.alias("challenger") in ("1", "2") and registry.alias("champion") is None
    records = registry.trail.records()
    assert [r.action for r in records].count("registration") == 2
    assert registry.trail.verify(registry.anchors()).intact
