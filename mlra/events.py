"""The audit records of the pipeline's data and training steps, shared by the CLI and the flows.

Registration, gate decisions, approvals, promotions and rollbacks are recorded by
:mod:`mlra.registry` and :mod:`mlra.promotion` themselves; this module records what comes before
them: ingest, validation, training and evaluation. Each function appends one record to ``trail``
and returns it. Subjects name what the record is about (a feedback store, a prepared folder, an
artifact by its sha256), details hold the figures a reviewer asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.audit import AuditRecord, Trail

if TYPE_CHECKING:
    from mlra.data.ingest import IngestResult
    from mlra.evaluation import EvaluationResult
    from mlra.training import TrainResult
    from mlra.validation import ValidationReport

__all__ = ["record_evaluation", "record_ingest", "record_training", "record_validation"]


def record_ingest(trail: Trail, actor: str, result: IngestResult) -> AuditRecord:
    """One record per ingest call: totals, and each file with its sha256 and quarantine reasons."""
    return trail.append(
        actor,
        "ingest",
        {"store": str(result.store_dir), "batch": result.batch},
        {
            "read": result.read,
            "accepted": result.accepted,
            "quarantined": result.quarantined,
            "files": [
                {
                    "path": f.path,
                    "sha256": f.sha256,
                    "status": f.status,
                    "accepted": f.accepted,
                    "quarantined": f.quarantined,
                    "reasons": f.reasons,
                }
                for f in result.files
            ],
        },
    )


def record_validation(
    trail: Trail, actor: str, report: ValidationReport, report_file: str | Path | None = None
) -> AuditRecord:
    """The gate's outcome over a prepared folder, with each failed expectation named."""
    drift = report.drift
    return trail.append(
        actor,
        "validation",
        {"prepared": report.prepared_dir, "report": str(report_file) if report_file else None},
        {
            "outcome": "passed" if report.passed else "failed",
            "rows": report.rows,
            "expectations": len(report.expectations),
            "failed": [f"{e.check}: {e.name}" for e in report.failed],
            "drift": report.drift_status,
            "drift_batch": drift.batch if drift else None,
            "drift_label_kl": round(drift.label_kl, 6) if drift else None,
        },
    )


def record_training(
    trail: Trail,
    actor: str,
    result: TrainResult,
    overrides: Mapping[str, Any] | None = None,
    feedback_rows: int | None = None,
) -> AuditRecord:
    """A trained candidate: its artifact and sha256, and the lineage it was trained from.
    ``feedback_rows``: accepted feedback rows in the store when training started (the flows
    compare it with the store's count to tell whether a retrain is due)."""
    meta = result.metadata
    details: dict[str, Any] = {
        "params_hash": meta["params_hash"],
        "data_hash": meta["data_hash"],
        "git_commit": meta["git_commit"],
        "seed": meta["seed"],
        "steps": meta["steps"],
        "rows": meta["rows"],
        "val_metrics": meta["val_metrics"],
        "resumed_from": result.resumed_from,
        "mlflow_run_id": result.mlflow_run_id,
        "overrides": dict(overrides or {}),
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
    if feedback_rows is not None:
        details["feedback_rows"] = feedback_rows
    return trail.append(
        actor,
        "training",
        {"artifact": str(result.adapter_dir), "adapter_sha256": result.adapter_sha256},
        details,
    )


def record_evaluation(
    trail: Trail, actor: str, result: EvaluationResult, metrics_file: str | Path
) -> AuditRecord:
    """Base vs candidate (vs champion) on the golden sets: overall macro-F1 per model."""
    overall = result.slices[result.overall].scores
    return trail.append(
        actor,
        "evaluation",
        {"artifact": result.info["candidate"], "adapter_sha256": result.info["candidate_sha256"]},
        {
            "metrics_file": str(metrics_file),
            "champion": result.info["champion"],
            "overall_macro_f1": {m: overall[m].macro_f1 for m in result.models},
            "golden_rows": result.info["golden_rows"],
        },
    )
