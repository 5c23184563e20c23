"""MLflow plumbing shared by training and the registry: experiments created race-safely, and the
run that carries a candidate's params, metrics, datasets and artifacts. Below both in the flow, so
neither imports the other for it."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

# the run's artifact folder a model version points at: the candidate folder's own name for it
from mlra.candidate import ADAPTER_DIR

if TYPE_CHECKING:
    import os

    from mlflow import MlflowClient
    from mlflow.entities import Run

    from mlra.artifact import Manifest
    from mlra.lineage import DatasetRef
    from mlra.metrics import EvaluationMetrics

__all__ = ["ADAPTER_DIR", "ensure_experiment", "log_candidate_run", "safe_name"]


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created unless it exists. Two processes that start at once
    on a shared server both find it missing; the loser's create fails, and it finds the
    winner's."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def log_candidate_run(
    client: MlflowClient,
    experiment_id: str,
    adapter: Path,
    manifest: Manifest,
    *,
    run_id: str | None,
    run_name: str | None,
    params: Mapping[str, Any],
    params_hash: str,
    evaluation: EvaluationMetrics,
    metrics_blob: bytes,
    report: Mapping[str, Any],
    report_path: Path | None,
    datasets: Sequence[DatasetRef],
    plots: Sequence[str | os.PathLike[str]],
    commit: str,
) -> Run:
    """Log a candidate into a new run of ``experiment_id`` (or into the existing ``run_id``,
    whose params are kept): params (flattened) and the adapter's spec, metrics per slice, the
    datasets with their DVC hashes, the adapter folder, the metrics JSON, the validation report
    and the plots. A new run is ended FINISHED, or FAILED if logging fails."""
    from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag

    own_run = run_id is None
    if run_id is None:
        run = client.create_run(
            experiment_id,
            run_name=run_name,
            tags={"mlra.adapter": manifest.name, "mlra.git_commit": commit},
        )
    else:
        run = client.get_run(run_id)
    run_id = run.info.run_id
    try:
        flat = _flatten(dict(params)) | {
            f"adapter.{k}": v for k, v in manifest.spec.to_dict().items()
        }
        have = run.data.params  # an existing run's params are immutable: keep them
        items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(flat.items()) if k not in have]
        now = int(datetime.now(UTC).timestamp() * 1000)
        scores = [Metric(k, v, now, 0) for k, v in sorted(_metric_items(evaluation).items())]
        for start in range(0, max(len(items), len(scores)), 100):
            client.log_batch(
                run_id, params=items[start : start + 100], metrics=scores[start : start + 100]
            )
        overall = evaluation.overall
        reference = "champion" if overall.champion is not None else "base model"
        note = (
            f"Candidate adapter `{manifest.sha256[:12]}` ({manifest.name}): overall macro-F1 "
            f"{float(overall.candidate['macro_f1']):.3f} against the {reference}'s "
            f"{float(overall.reference()['macro_f1']):.3f}. Registered by mlra; the model "
            "version's description is its model card."
        )
        client.log_batch(
            run_id,
            tags=[RunTag("mlra.params_hash", params_hash), RunTag("mlflow.note.content", note)],
        )
        inputs = [
            DatasetInput(
                _meta_dataset(ref)._to_mlflow_entity(),
                [InputTag("mlflow.data.context", ref.context)]
                + ([InputTag("mlra.rows", str(ref.rows))] if ref.rows is not None else []),
            )
            for ref in datasets
        ]
        if inputs:
            client.log_inputs(run_id, inputs)
        client.log_artifacts(run_id, str(adapter), ADAPTER_DIR)
        with tempfile.TemporaryDirectory(prefix="mlra-register-") as tmp:
            (Path(tmp) / "metrics.json").write_bytes(metrics_blob)
            client.log_artifact(run_id, str(Path(tmp) / "metrics.json"), "evaluation")
            if report_path is None:
                report_path = Path(tmp) / "report.json"
                report_path.write_text(json.dumps(report, indent=2, default=str))
            client.log_artifact(run_id, str(report_path), "validation")
            for plot in plots:
                client.log_artifact(run_id, str(plot), "evaluation/plots")
    except BaseException:
        if own_run:
            client.set_terminated(run_id, "FAILED")
        raise
    if own_run:
        client.set_terminated(run_id, "FINISHED")
    return client.get_run(run_id)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= _flatten(value, name + ".")
        else:
            out[name] = value
    return out


_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def _metric_items(metrics: EvaluationMetrics) -> dict[str, float]:
    """``<slice>.<model>.<score>`` -> value, for MLflow's metric charts."""
    out: dict[str, float] = {}
    for name, sl in [("overall", metrics.overall), *metrics.slices.items()]:
        for who, scores in (
            ("base", sl.base),
            ("candidate", sl.candidate),
            ("champion", sl.champion),
        ):
            for key in ("accuracy", "macro_f1"):
                if scores is not None:
                    key_name = _METRIC_KEY.sub("_", f"{name}.{who}.{key}")
                    out[key_name] = round(float(scores[key]), 4)  # as people read them
    return out


def _meta_dataset(ref: DatasetRef) -> Any:
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow registers the local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(ref.path)
    return MetaDataset(source, name=ref.name, digest=ref.digest)  # type: ignore[abstract]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"
