"""The retraining pipeline's steps as Prefect tasks: each a thin wrapper over an mlra function.

Tasks that talk to MLflow (or the registry's database) retry after a transient fault — the
server unreachable, a connection dropped, a database busy — never after bad data, a failed
gate or bad params (:func:`is_transient`). The number of retries and their delay come from
params.yaml (``pipeline.retries``, ``pipeline.retry_delay_s``) through :func:`with_retries`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from mlra.config import Params
from mlra.steps import is_transient, registry_for

__all__ = ["is_transient", "registry_for", "with_retries"]  # and the tasks below

if TYPE_CHECKING:
    from mlra.data.ingest import IngestResult
    from mlra.data.splits import PrepareResult
    from mlra.evaluation import EvaluationResult
    from mlra.modules import BundleRecord
    from mlra.promotion import GateDecision, Transition
    from mlra.steps import BundleEvaluation
    from mlra.training import TrainResult
    from mlra.training.modular import ModularTrainResult
    from mlra.validation import ValidationReport

T = TypeVar("T")


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


# -- data --------------------------------------------------------------------------------------


@task(name="simulate-feedback", cache_policy=NO_CACHE)
def simulate_feedback(params: Params, inbox: Path) -> Path | None:
    """The next simulated week of field feedback, written into ``inbox``."""
    from mlra.data.feedback import simulate_next

    return simulate_next(params, inbox)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_feedback(params: Params, inbox: Path, actor: str) -> IngestResult:
    """Every file in ``inbox`` not ingested before: rows accepted, or quarantined with reasons."""
    from mlra import steps

    inbox.mkdir(parents=True, exist_ok=True)
    return steps.ingest(params, [inbox], actor)


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_splits(params: Params) -> PrepareResult:
    """The train/val/test/golden splits of the corpus plus the accepted feedback."""
    from mlra import steps

    return steps.prepare(params)


@task(name="validate", cache_policy=NO_CACHE)
def validate_data(params: Params, actor: str) -> ValidationReport:
    """The Great Expectations gate and the drift check; the report is written either way."""
    from mlra import steps

    return steps.validate(params, actor)


# -- training and evaluation -------------------------------------------------------------------


@task(name="fetch-champion", cache_policy=NO_CACHE)
def fetch_champion(params: Params, module: str | None = None) -> str | None:
    """Download and verify the registry's champion (of ``module``: into its subfolder) into
    ``evaluate.champion_dir`` (what the candidate is compared with); clear the folder when there
    is no champion. Its version."""
    folder = Path(params.evaluate.champion_dir)
    return registry_for(params, module).fetch_champion(folder / module if module else folder)


@task(name="train", cache_policy=NO_CACHE)
def train_adapter(
    params: Params, actor: str, feedback_rows: int, progress_bar: bool = False
) -> TrainResult:
    """Base head, then adapter and head on the target domains (Lightning); logs to MLflow."""
    from mlra import steps

    return steps.train(params, actor, progress_bar=progress_bar, feedback_rows=feedback_rows)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_candidate(
    params: Params, champion: str | None, actor: str
) -> tuple[EvaluationResult, list[Path]]:
    """Base vs candidate (vs champion) per golden slice; the metrics JSON, table and plots."""
    from mlra import steps

    champion_dir = Path(params.evaluate.champion_dir) if champion is not None else None
    return steps.evaluate(params, actor, champion_dir=champion_dir, fetch_champion=False)


# -- the registry ------------------------------------------------------------------------------


@task(name="register", cache_policy=NO_CACHE)
def register_version(
    params: Params, trained: TrainResult, report_file: Path, plots: list[Path], actor: str
) -> tuple[str, str]:
    """Log a run for the candidate and register it as a model version: ``(version, run id)``;
    idempotent (:func:`mlra.steps.register`): a retry after a fault finds the version."""
    from mlra import steps

    return steps.register(
        params,
        actor,
        adapter_dir=trained.adapter_dir,
        report_file=report_file,
        plots=plots,
        run_name=f"retrain-{trained.adapter_sha256[:12]}",
    )


@task(name="gate", cache_policy=NO_CACHE)
def gate_version(
    params: Params, version: str, actor: str, module: str | None = None
) -> GateDecision:
    """The promotion gates; a passing version becomes ``challenger``."""
    from mlra.promotion import run_gates

    return run_gates(registry_for(params, module), version, params.promotion, actor)


@task(name="promote", cache_policy=NO_CACHE)
def promote_version(
    params: Params, version: str, actor: str, module: str | None = None
) -> Transition:
    """``champion`` to ``version`` (gates again; approval unless the policy is automatic)."""
    from mlra.promotion import promote

    return promote(registry_for(params, module), version, params.promotion, actor)


@task(name="approve", cache_policy=NO_CACHE)
def record_answer(params: Params, version: str, approve: bool, by: str, reason: str) -> None:
    """A person's answer given to a paused flow: recorded as an approval or a rejection."""
    from mlra.promotion import approve as approve_version
    from mlra.promotion import reject

    if approve:
        approve_version(registry_for(params), version, by, reason, params.promotion)
    else:
        reject(registry_for(params), version, by, reason)


@task(name="rollback", cache_policy=NO_CACHE)
def rollback_champion(params: Params, actor: str, reason: str) -> Transition:
    """``champion`` back to the version it replaced."""
    from mlra.promotion import rollback

    return rollback(registry_for(params), actor, reason)


# -- modules (docs/modules.md) -----------------------------------------------------------------


@task(name="train-modules", cache_policy=NO_CACHE)
def train_modules(
    params: Params,
    actor: str,
    due: list[str],
    feedback_rows: int,
    feedback_by_domain: dict[str, int],
    progress_bar: bool = False,
) -> ModularTrainResult:
    """The due modules and the router, in one routed pass (Lightning); logs to MLflow."""
    from mlra import steps

    return steps.train_modules(params, actor, due, progress_bar=progress_bar,
                               feedback_rows=feedback_rows,
                               feedback_by_domain=feedback_by_domain)  # fmt: skip


@task(name="evaluate-module", cache_policy=NO_CACHE)
def evaluate_module(
    params: Params, module: str, champion: str | None, actor: str
) -> tuple[EvaluationResult, list[Path]]:
    """A module's candidate vs its champion (vs the base) on its own golden slice."""
    from mlra import steps

    folder = Path(params.evaluate.champion_dir) / module
    return steps.evaluate(params, actor, module=module,
                          champion_dir=folder if champion is not None else None,
                          fetch_champion=False)  # fmt: skip


@task(name="register-module", cache_policy=NO_CACHE)
def register_module(
    params: Params, module: str, sha256: str, report_file: Path, plots: list[Path], actor: str
) -> tuple[str, str]:
    """Register a module's candidate as a version of its own model (idempotent)."""
    from mlra import steps

    return steps.register(params, actor, module=module, report_file=report_file, plots=plots,
                          run_name=f"retrain-{module}-{sha256[:12]}")  # fmt: skip


@task(name="evaluate-bundle", cache_policy=NO_CACHE)
def evaluate_bundle(params: Params, serving: dict[str, str], actor: str) -> BundleEvaluation:
    """The bundle that would serve (each module's passing candidate, else its champion; the new
    router) against the one serving now and the base, on every slice, routed by the router."""
    from mlra import steps

    return steps.evaluate_bundle(params, actor, serving)


@task(name="record-bundle", cache_policy=NO_CACHE)
def record_bundle(
    params: Params, actor: str, reason: str, router_dir: Path | None, router_sha256: str | None
) -> BundleRecord:
    """The bundle record: each module's champion now, and the router in ``router_dir`` (stored
    in MLflow first; None: keep the last bundle's router)."""
    from mlra.modules import record_bundle as record
    from mlra.modules import store_router

    router = None
    if router_dir is not None and router_sha256 is not None:
        router = store_router(registry_for(params), router_dir, router_sha256)
    return record(params, actor, reason, router=router)
