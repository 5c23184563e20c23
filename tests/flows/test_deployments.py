"""prefect.yaml and the flows agree: every entrypoint is a Prefect flow with the parameters the
deployment passes, and the weekly schedule is params.yaml's."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_every_deployment_points_at_a_flow_with_its_parameters() -> None:
    from prefect import Flow

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    names = {d["name"] for d in spec["deployments"]}
    assert names == {"mlra-retrain", "mlra-retrain-if-due", "mlra-promote", "mlra-rollback"}
    for deployment in spec["deployments"]:
        path, _, attr = deployment["entrypoint"].partition(":")
        assert (REPO / path).is_file(), path
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attr)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        accepted = inspect.signature(flow.fn).parameters
        for name in deployment.get("parameters", {}):
            assert name in accepted, (deployment["name"], name)
        assert deployment["work_pool"]["name"] == "{{ $MLRA_WORK_POOL }}"


def test_the_scheduled_deployment_runs_on_the_params_cron() -> None:
    from mlra.config import load_params

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    scheduled = next(d for d in spec["deployments"] if d["name"] == "mlra-retrain-if-due")
    assert scheduled["schedules"][0]["cron"] == load_params(REPO / "params.yaml").pipeline.schedule


def test_retries_are_for_transient_faults_only() -> None:
    from mlflow.exceptions import MlflowException

    from flows.tasks import is_transient
    from mlra.errors import DataError, ValidationFailed

    refused = MlflowException(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/registered-models/get failed with "
        "exception HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded"
    )
    assert is_transient(refused)
    assert is_transient(ConnectionRefusedError(111, "Connection refused"))
    wrapped = RuntimeError("registering failed")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert is_transient(wrapped)
    assert not is_transient(ValidationFailed("the validation gate failed 1 of 9 expectations"))
    assert not is_transient(DataError("no such file or folder: data/inbox/x.csv"))
    assert not is_transient(MlflowException("RESOURCE_DOES_NOT_EXIST: no model 'x'"))
    assert not is_transient(ValueError("bad value"))
