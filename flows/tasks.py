"""The retraining pipeline's steps as Prefect tasks: each a thin wrapper over an mlra function.

Tasks that talk to MLflow (or the registry's database) retry after a transient fault — the
server unreachable, a connection dropped, a database busy — never after bad data, a failed
gate or bad params (:func:`is_transient`). The number of retries and their delay come from
params.yaml (``pipeline.retries``, ``pipeline.retry_delay_s``) through :func:`with_retries`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from mlra.audit import default_trail
from mlra.config import Params
from mlra.errors import MlraError

if TYPE_CHECKING:
    from mlra.data.ingest import IngestResult
    from mlra.data.splits import PrepareResult
    from mlra.evaluation import EvaluationResult
    from mlra.promotion import GateDecision, Transition
    from mlra.registry import Registry
    from mlra.training import TrainResult
    from mlra.validation import ValidationReport

T = TypeVar("T")

# words in the message of an MLflow error that wraps a network or database fault
_TRANSIENT_TEXT: Final = (
    "max retries exceeded",
    "connection refused",
    "connection reset",
    "connection aborted",
    "remote end closed",
    "timed out",
    "temporarily unavailable",
    "database is locked",
    "resource_already_exists",  # a concurrent writer created it first: the retry finds it
    "502",
    "503",
    "504",
)


def is_transient(exc: BaseException | None) -> bool:
    """True for faults that may pass if tried again: connections refused or dropped, timeouts,
    a database that is busy or restarting. mlra's own errors (bad data, failed validation,
    refused gates, bad params, integrity failures) are never transient."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MlraError):
            return False
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        module = type(exc).__module__.split(".")[0]
        if module in ("requests", "urllib3", "httpx", "httpcore"):
            return True
        if type(exc).__name__ == "OperationalError":  # SQLAlchemy: server gone, database locked
            return True
        if module == "mlflow" and any(t in str(exc).lower() for t in _TRANSIENT_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by result()
        return is_transient(exc)
    return False


def with_retries(t: Task[..., T], params: Params) -> Task[..., T]:
    """``t`` with params.yaml's retries for transient faults."""
    return t.with_options(
        retries=params.pipeline.retries,
        retry_delay_seconds=params.pipeline.retry_delay_s,
        retry_condition_fn=_retry_transient,
    )


def registry_for(params: Params) -> Registry:
    """The registry of params.yaml's model, on ``$MLFLOW_TRACKING_URI`` (else the project's
    SQLite store), recording into ``$MLRA_AUDIT`` (else the project's trail file)."""
    from mlra.registry import Registry

    return Registry(model=params.registry.model_name, experiment=params.registry.experiment)


# -- data --------------------------------------------------------------------------------------


@task(name="simulate-feedback", cache_policy=NO_CACHE)
def simulate_feedback(params: Params, inbox: Path) -> Path | None:
    """The next simulated week of field feedback, written into ``inbox``."""
    from mlra.data.feedback import simulate_next

    return simulate_next(params, inbox)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_feedback(params: Params, inbox: Path, actor: str) -> IngestResult:
    """Every file in ``inbox`` not ingested before: rows accepted, or quarantined with reasons."""
    from mlra.data.ingest import ingest
    from mlra.events import record_ingest

    inbox.mkdir(parents=True, exist_ok=True)
    result = ingest([inbox], params.data.feedback_dir, params)
    if result.batch is not None:
        record_ingest(default_trail(), actor, result)
    return result


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_splits(params: Params) -> PrepareResult:
    """The train/val/test/golden splits of the corpus plus the accepted feedback."""
    from mlra.data.splits import prepare

    return prepare(params)


@task(name="validate", cache_policy=NO_CACHE)
def validate_data(params: Params, report_dir: Path, actor: str) -> ValidationReport:
    """The Great Expectations gate and the drift check; the report is written either way."""
    from mlra.events import record_validation
    from mlra.validation import validate

    report = validate(params, out_dir=report_dir, raise_on_failure=False)
    record_validation(default_trail(), actor, report, report_dir / "report.json")
    return report


def accepted_rows(params: Params) -> int:
    """Accepted feedback rows in the store."""
    from mlra.data.ingest import load_accepted

    return len(load_accepted(params.data.feedback_dir, columns=["id"]))


# -- training and evaluation -------------------------------------------------------------------


@task(name="fetch-champion", cache_policy=NO_CACHE)
def fetch_champion(params: Params) -> str | None:
    """Download and verify the registry's champion into ``evaluate.champion_dir`` (what the
    candidate is compared with); clear the folder when there is no champion. Its version."""
    from mlra.registry import CHAMPION
    from mlra.training import ADAPTER_DIR

    registry = registry_for(params)
    version = registry.alias(CHAMPION) if registry.exists() else None
    folder = Path(params.evaluate.champion_dir)
    shutil.rmtree(folder / ADAPTER_DIR, ignore_errors=True)
    if version is not None:
        folder.mkdir(parents=True, exist_ok=True)
        registry.fetch(version, folder)  # verifies hashes, base fingerprint, registration record
    return version


@task(name="train", cache_policy=NO_CACHE)
def train_adapter(
    params: Params, actor: str, feedback_rows: int, progress_bar: bool = False
) -> TrainResult:
    """Base head, then adapter and head on the target domains (Lightning); logs to MLflow."""
    from mlra.events import record_training
    from mlra.training import train

    result = train(params.data, params.train, progress_bar=progress_bar)
    record_training(default_trail(), actor, result, feedback_rows=feedback_rows)
    return result


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_candidate(
    params: Params, champion: str | None, actor: str
) -> tuple[EvaluationResult, list[Path]]:
    """Base vs candidate (vs champion) per golden slice; the metrics JSON, table and plots."""
    from mlra.evaluation import evaluate, write_outputs
    from mlra.events import record_evaluation

    ep = params.evaluate
    champion_dir = Path(ep.champion_dir) if champion is not None else None
    result = evaluate(params.data, ep, params.train.out_dir, champion_dir=champion_dir)
    plots = write_outputs(result, ep.metrics_file, ep.report_file, ep.plots_dir)
    record_evaluation(default_trail(), actor, result, ep.metrics_file)
    return result, plots


# -- the registry ------------------------------------------------------------------------------


@task(name="register", cache_policy=NO_CACHE)
def register_version(
    params: Params, trained: TrainResult, report_file: Path, plots: list[Path], actor: str
) -> tuple[str, str]:
    """Log a run for the candidate (experiment ``registry.experiment``; the training run's id is
    in the adapter's manifest) and register it as a model version: ``(version, run id)``.

    A retry after a fault that struck once the version existed finds that version (the same
    adapter sha256) instead of registering the adapter twice.
    """
    from mlra.registry import dataset_ref

    registry = registry_for(params)
    if registry.exists():
        for mv in registry.versions():
            if mv.tags.get("mlra.adapter_sha256") == trained.adapter_sha256:
                return str(mv.version), str(mv.run_id)
    prepared = Path(params.data.prepared_dir)
    mv = registry.register(
        trained.adapter_dir,
        metrics=params.evaluate.metrics_file,
        validation=report_file,
        params=params.to_dict(),
        datasets=[
            dataset_ref(prepared / "train.parquet", "train"),
            dataset_ref(prepared / "val.parquet", "val", context="validation"),
            dataset_ref(prepared / "golden.parquet", "golden", context="evaluation"),
        ],
        plots=plots,
        actor=actor,
        run_name=f"retrain-{trained.adapter_sha256[:12]}",
    )
    return str(mv.version), str(mv.run_id)


@task(name="gate", cache_policy=NO_CACHE)
def gate_version(params: Params, version: str, actor: str) -> GateDecision:
    """The promotion gates; a passing version becomes ``challenger``."""
    from mlra.promotion import run_gates

    return run_gates(registry_for(params), version, params.promotion, actor)


@task(name="promote", cache_policy=NO_CACHE)
def promote_version(params: Params, version: str, actor: str) -> Transition:
    """``champion`` to ``version`` (gates again; approval unless the policy is automatic)."""
    from mlra.promotion import promote

    return promote(registry_for(params), version, params.promotion, actor)


@task(name="approve", cache_policy=NO_CACHE)
def record_answer(params: Params, version: str, approve: bool, by: str, reason: str) -> None:
    """A person's answer given to a paused flow: recorded as an approval or a rejection."""
    from mlra.promotion import approve as approve_version
    from mlra.promotion import reject

    (approve_version if approve else reject)(registry_for(params), version, by, reason)


@task(name="rollback", cache_policy=NO_CACHE)
def rollback_champion(params: Params, actor: str, reason: str) -> Transition:
    """``champion`` back to the version it replaced."""
    from mlra.promotion import rollback

    return rollback(registry_for(params), actor, reason)
