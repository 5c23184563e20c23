"""The pipeline's steps: each one library call that does the work *and* writes its audit record.

DESIGN.md's flow, step by step — ingest, prepare, validate, train, evaluate, register (then the
gates, approval, promotion and rollback of :mod:`mlra.promotion`, which record themselves). The
`mlra` commands and the Prefect tasks (``flows/tasks.py``) are thin wrappers over these, so they
cannot drift apart, and calling a step from Python leaves the same record as the pipeline. The
rules the pipeline applies between steps live here too: idempotent registration, when a person
must approve (:func:`needs_person`), when a retrain is due (:func:`retrain_check`), which faults
are worth a retry (:func:`is_transient`). Paths come from params.yaml.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.audit import AuditRecord, Trail, default_trail
from mlra.errors import MlraError

if TYPE_CHECKING:
    from mlra.config import Params, PromotionParams
    from mlra.data.ingest import IngestResult
    from mlra.data.splits import PrepareResult
    from mlra.evaluation import EvaluationResult
    from mlra.governance import GateResult
    from mlra.registry import Registry
    from mlra.training import TrainResult
    from mlra.training.modular import ModularTrainResult
    from mlra.validation import ValidationReport

__all__ = [
    "BundleEvaluation",
    "RetrainCheck",
    "accepted_rows",
    "evaluate",
    "evaluate_bundle",
    "ingest",
    "is_transient",
    "last_trained_feedback_rows",
    "module_dir",
    "module_outputs",
    "needs_person",
    "prepare",
    "register",
    "registry_for",
    "retrain_check",
    "train",
    "train_modules",
    "validate",
]


def registry_for(params: Params, module: str | None = None) -> Registry:
    """The registry of params.yaml's model (or of ``module``'s: ``<model_name>.<module>``), on
    ``$MLFLOW_TRACKING_URI`` (else the project's SQLite store), recording into ``$MLRA_AUDIT``
    (else the project's trail file)."""
    from mlra.registry import Registry

    if module is not None:
        from mlra.modules import registry_for as module_registry

        return module_registry(params, module)
    return Registry(model=params.registry.model_name, experiment=params.registry.experiment)


# -- data ------------------------------------------------------------------------------------------


def ingest(
    params: Params,
    paths: Iterable[str | Path],
    actor: str,
    *,
    store: str | Path | None = None,
    progress: Callable[[Path], None] | None = None,
    trail: Trail | None = None,
) -> IngestResult:
    """Ingest feedback files (or folders of them) into the store (``data.feedback_dir``): rows
    accepted, or quarantined with their reason. Records one ``ingest`` record when anything new
    was read (ingesting the same file again adds nothing, and records nothing)."""
    from mlra.data.ingest import ingest as run

    result = run(paths, store if store is not None else params.data.feedback_dir, params,
                 progress=progress)  # fmt: skip
    if result.batch is not None:
        _record_ingest(trail or default_trail(), actor, result)
    return result


def prepare(
    params: Params, *, out_dir: str | Path | None = None, feedback_dir: str | Path | None = None
) -> PrepareResult:
    """The train/val/test/golden splits of the corpus plus the accepted feedback (no record: the
    splits are a pure function of their inputs, and validation records what it checked)."""
    from mlra.data.splits import prepare as run

    return run(params, out_dir=out_dir, feedback_dir=feedback_dir)


def validate(
    params: Params,
    actor: str,
    *,
    prepared_dir: str | Path | None = None,
    feedback_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    data_docs: bool = True,
    trail: Trail | None = None,
) -> ValidationReport:
    """The Great Expectations gate and the drift check over the prepared data; the report is
    written to ``validation.report_dir`` and recorded either way (the caller decides whether a
    failure stops: :meth:`ValidationReport.raise_if_failed`)."""
    from mlra.validation import validate as run

    out = Path(out_dir if out_dir is not None else params.validation.report_dir)
    report = run(params, prepared_dir=prepared_dir, feedback_dir=feedback_dir, out_dir=out,
                 data_docs=data_docs, raise_on_failure=False)  # fmt: skip
    drift = report.drift
    (trail or default_trail()).append(
        actor,
        "validation",
        {"prepared": report.prepared_dir, "report": str(out / "report.json")},
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
    return report


# -- training and evaluation -------------------------------------------------------------------


def train(
    params: Params,
    actor: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    prepared_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    log_mlflow: bool = True,
    progress_bar: bool = True,
    feedback_rows: int | None = None,
    trail: Trail | None = None,
) -> TrainResult:
    """Train the candidate (``train`` params with ``overrides``), then record it: its artifact
    and sha256, and the lineage it was trained from. ``feedback_rows``: accepted feedback rows in
    the store when training started (what :func:`retrain_check` compares with). A DDP worker
    (not rank 0) records nothing."""
    from mlra.training import train as run

    tp = dataclasses.replace(params.train, **dict(overrides or {}))  # re-checked in __post_init__
    result = run(params.data, tp, prepared_dir=prepared_dir, out_dir=out_dir, resume=resume,
                 log_mlflow=log_mlflow, progress_bar=progress_bar)  # fmt: skip
    if result.adapter_sha256:
        _record_training(trail or default_trail(), actor, result, overrides, feedback_rows)
    return result


def evaluate(
    params: Params,
    actor: str,
    *,
    module: str | None = None,
    candidate_dir: str | Path | None = None,
    champion_dir: str | Path | None = None,
    fetch_champion: bool = True,
    prepared_dir: str | Path | None = None,
    max_rows_per_slice: int | None = None,
    trail: Trail | None = None,
) -> tuple[EvaluationResult, list[Path]]:
    """Base vs candidate vs the champion per golden slice; writes the metrics JSON, the table and
    the plots, and records the evaluation. With ``fetch_champion`` (and no ``champion_dir``) the
    champion that serves now — by the audit trail, verified — is downloaded into
    ``evaluate.champion_dir`` first, so metrics never compare against an older one.

    ``module``: that module's candidate (:func:`module_dir`) against its own champion
    (``evaluate.champion_dir/<module>``) on its own golden slice; outputs :func:`module_outputs`.
    """
    from mlra.evaluation import evaluate as run
    from mlra.evaluation import write_outputs

    ep = params.evaluate
    if max_rows_per_slice is not None:
        ep = dataclasses.replace(ep, max_rows_per_slice=max_rows_per_slice)
    champion = Path(champion_dir) if champion_dir is not None else None
    folder = Path(ep.champion_dir) / module if module else Path(ep.champion_dir)
    fetch = champion is None and fetch_champion and bool(ep.champion_dir)
    if fetch and registry_for(params, module).fetch_champion(folder) is not None:
        champion = folder
    if candidate_dir is None:
        candidate_dir = module_dir(params, module) if module else params.train.out_dir
    result = run(params.data, ep, Path(candidate_dir), champion_dir=champion,
                 prepared_dir=prepared_dir, domains=[module] if module else None,
                 overall=module)  # fmt: skip
    outputs = module_outputs(params, module) if module else (
        Path(ep.metrics_file), Path(ep.report_file), Path(ep.plots_dir)
    )  # fmt: skip
    plots = write_outputs(result, *outputs)
    overall = result.slices[result.overall].scores
    subject = {
        "artifact": result.info["candidate"],
        "adapter_sha256": result.info["candidate_sha256"],
    }
    if module:
        from mlra.modules import model_name

        subject = {"model": model_name(params, module), "module": module, **subject}
    (trail or default_trail()).append(
        actor,
        "evaluation",
        subject,
        {
            "metrics_file": str(outputs[0]),
            "champion": result.info["champion"],
            "champion_ref": result.info.get("champion_ref"),
            "overall_macro_f1": {m: overall[m].macro_f1 for m in result.models},
            "golden_rows": result.info["golden_rows"],
        },
    )
    return result, plots


# -- the registry ------------------------------------------------------------------------------


def register(
    params: Params,
    actor: str,
    *,
    adapter_dir: str | Path | None = None,
    metrics_file: str | Path | None = None,
    report_file: str | Path | None = None,
    plots: Iterable[str | Path] = (),
    datasets: Iterable[Any] | None = None,
    run_name: str | None = None,
    module: str | None = None,
) -> tuple[str, str]:
    """Log a run for the candidate and register it as a model version: ``(version, run id)``.

    Idempotent: an adapter whose sha256 the trail already registered returns that version (a
    retry after a fault that struck once the version existed, or the same command twice) instead
    of registering it again. ``datasets`` default to the prepared splits with their DVC hashes.
    ``module``: register into that module's model (its candidate folder and metrics by default).
    """
    from mlra.artifact import inspect_adapter
    from mlra.registry import dataset_ref

    if adapter_dir is None:
        folder = module_dir(params, module) if module else Path(params.train.out_dir)
        adapter_dir = folder / "adapter"
    if metrics_file is None and module is not None:
        metrics_file = module_outputs(params, module)[0]
    adapter = Path(adapter_dir)
    sha256 = inspect_adapter(adapter).sha256
    registry = registry_for(params, module)
    if registry.exists():  # by the trail: a tag edited in the registry must not fool it
        for v, vs in registry.state().versions.items():
            if vs.adapter_sha256 == sha256:
                return v, str(vs.details.get("run_id"))
    if datasets is None:
        prepared = Path(params.data.prepared_dir)
        datasets = [
            dataset_ref(prepared / "train.parquet", "train"),
            dataset_ref(prepared / "val.parquet", "val", context="validation"),
            dataset_ref(prepared / "golden.parquet", "golden", context="evaluation"),
        ]
    mv = registry.register(
        adapter,
        metrics=metrics_file if metrics_file is not None else params.evaluate.metrics_file,
        validation=report_file
        if report_file is not None
        else Path(params.validation.report_dir) / "report.json",
        params=params.to_dict(),
        datasets=list(datasets),
        plots=[Path(p) for p in plots],
        actor=actor,
        run_name=run_name or f"{module or 'candidate'}-{sha256[:12]}",
    )
    return str(mv.version), str(mv.run_id)


# -- modules (docs/modules.md) ------------------------------------------------------------------


def module_dir(params: Params, module: str) -> Path:
    """Where a modular training pass writes ``module``'s candidate folder."""
    return Path(params.modules.out_dir) / module


def module_outputs(params: Params, module: str | None) -> tuple[Path, Path, Path]:
    """``(metrics file, report file, plots folder)`` of a module's evaluation (``None``: the
    bundle's): beside the shared model's, under ``modules/<module>`` (``bundle``)."""
    ep = params.evaluate
    name = module or "bundle"
    metrics, report = Path(ep.metrics_file), Path(ep.report_file)
    return (
        metrics.parent / "modules" / f"{name}{metrics.suffix}",
        report.parent / "modules" / f"{name}{report.suffix}",
        Path(ep.plots_dir) / "modules" / name,
    )


def train_modules(
    params: Params,
    actor: str,
    due: Sequence[str] | None = None,
    *,
    prepared_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    log_mlflow: bool = True,
    progress_bar: bool = True,
    feedback_rows: int | None = None,
    feedback_by_domain: Mapping[str, int] | None = None,
    trail: Trail | None = None,
) -> ModularTrainResult:
    """Train the modules in ``due`` (default: all) in one routed pass, with the router; one
    ``training`` record per trained module (its model, artifact, sha256, the feedback rows its
    domain had: what :func:`mlra.modules.modules_due` compares with)."""
    from mlra.modules import model_name, module_params_hash
    from mlra.training.modular import train_modules as run

    result = run(params.data, params.train, params.modules, due=due, prepared_dir=prepared_dir,
                 out_dir=out_dir, resume=resume, log_mlflow=log_mlflow,
                 progress_bar=progress_bar)  # fmt: skip
    trail = trail or default_trail()
    by_domain = dict(feedback_by_domain or {})
    for name, module in result.modules.items():
        meta = module.metadata
        details: dict[str, Any] = {
            "params_hash": module_params_hash(params, name),
            "data_hash": meta.get("data_hash"),
            "git_commit": meta.get("git_commit"),
            "seed": meta.get("seed"),
            "steps": result.steps,
            "rows": meta.get("rows"),
            "trained_with": sorted(result.modules),
            "router_sha256": result.router_sha256,
            "mlflow_run_id": result.mlflow_run_id,
            "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
            "domain_feedback_rows": int(by_domain.get(name, 0)),
        }
        if feedback_rows is not None:
            details["feedback_rows"] = feedback_rows
        trail.append(
            actor,
            "training",
            {"model": model_name(params, name), "module": name,
             "artifact": str(module.adapter_dir), "adapter_sha256": module.adapter_sha256},
            details,
        )  # fmt: skip
    return result


@dataclass(frozen=True)
class BundleEvaluation:
    """The bundle that would serve, evaluated (:func:`evaluate_bundle`): its result, plots, the
    bundle gates, and the new router they judge."""

    result: EvaluationResult
    plots: list[Path]
    gates: list[GateResult]
    router_dir: Path
    router_sha256: str

    @property
    def router_accepted(self) -> bool:
        """Whether the new router may enter the bundle: every bundle gate passed."""
        return all(g.passed for g in self.gates)

    @property
    def overall(self) -> dict[str, float]:
        """Macro-F1 of the overall slice per model (base, candidate, champion)."""
        scores = self.result.slices[self.result.overall].scores
        return {m: s.macro_f1 for m, s in scores.items()}

    @property
    def table(self) -> list[dict[str, Any]]:
        """Per slice: rows and macro-F1 per model (the run's table artifact)."""
        return [
            {"slice": sl.name + (" (few rows in a class)" if sl.noisy else ""),
             "rows": sl.scores["candidate"].support,
             **{f"{m} macro-F1": round(sl.scores[m].macro_f1, 3) for m in self.result.models},
             **{f"Δ vs {m}": round(d, 3) for m in ("base", "champion")
                if (d := sl.delta(m)) is not None}}
            for sl in self.result.slices.values()
        ]  # fmt: skip


def evaluate_bundle(
    params: Params,
    actor: str,
    serving: Mapping[str, str],
    *,
    prepared_dir: str | Path | None = None,
    trail: Trail | None = None,
) -> BundleEvaluation:
    """The bundle that would serve — per module ``serving[m]``: ``"candidate"`` (the folder the
    training pass wrote) or ``"champion"`` (``evaluate.champion_dir/<m>``, when one was fetched)
    — with the new router, against the bundle serving now (the last bundle record's champions
    and router, verified) and the base, on every slice; then the bundle gates. Recorded."""
    from mlra.bundle_eval import BundleSource, bundle_gates, write_bundle_outputs
    from mlra.bundle_eval import evaluate_bundle as run
    from mlra.modules import bundle_at, fetch_router
    from mlra.router import Router

    trail = trail or default_trail()
    champions = Path(params.evaluate.champion_dir)
    chosen: dict[str, Path] = {}
    for m, which in serving.items():
        folder = module_dir(params, m) if which == "candidate" else champions / m
        if (folder / "adapter").is_dir():
            chosen[m] = folder
    router_dir = Path(params.modules.out_dir) / "router"
    router_sha = Router.load(router_dir)[0].sha256
    candidate = BundleSource(chosen, router_dir, router_sha, {"serving": dict(serving)})
    current = None
    last = bundle_at(trail.records(), params.registry.model_name) if trail.exists() else None
    if last is not None and last.router is not None:
        now = {m: champions / m for m, v in last.versions().items() if v is not None}
        if all((folder / "adapter").is_dir() for folder in now.values()):
            old_router = fetch_router(registry_for(params), last.router, champions / "router")
            current = BundleSource(now, old_router, str(last.router["sha256"]),
                                   {"bundle": last.number})  # fmt: skip
    result = run(params.data, params.evaluate, params.modules, candidate, current,
                 prepared_dir=prepared_dir)  # fmt: skip
    metrics, report, plots_dir = module_outputs(params, None)
    plots = write_bundle_outputs(result, metrics, report, plots_dir)
    gates = bundle_gates(result, params.modules, params.promotion.min_slice_support)
    overall = result.slices[result.overall].scores
    trail.append(
        actor,
        "evaluation",
        {"name": params.registry.model_name, "bundle": "candidate", "router_sha256": router_sha},
        {
            "metrics_file": str(metrics),
            "modules": {m: str(f) for m, f in chosen.items()},
            "compared_with": dict(current.ref or {}) if current is not None else None,
            "overall_macro_f1": {m: overall[m].macro_f1 for m in result.models},
            "gates": {g.name: {"ok": g.passed, "detail": g.detail} for g in gates},
            "golden_rows": result.info["golden_rows"],
        },
    )
    return BundleEvaluation(result, plots, gates, router_dir, router_sha)


def needs_person(policy: PromotionParams, champion_before: str | None) -> bool:
    """Whether promoting a version that passed the gates needs a person's approval: always under
    ``manual``, never under ``automatic``, and under ``first-automatic`` once a champion serves."""
    return policy.approval == "manual" or (
        policy.approval == "first-automatic" and champion_before is not None
    )


# -- the schedule ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainCheck:
    """The scheduled check's verdict: how many accepted feedback rows arrived since the newest
    trained version, against ``pipeline.min_new_rows``."""

    due: bool
    accepted_rows: int
    at_last_training: int | None
    new_rows: int
    min_new_rows: int

    def __str__(self) -> str:
        then = (
            "none yet"
            if self.at_last_training is None
            else f"{self.at_last_training} then, {self.accepted_rows} now"
        )
        verdict = "retraining" if self.due else "not due"
        return (
            f"{self.new_rows} accepted feedback rows since the last trained version ({then}); "
            f"threshold {self.min_new_rows}: {verdict}"
        )


def retrain_check(params: Params, actor: str, trail: Trail | None = None) -> RetrainCheck:
    """Is a retrain due? Compares the accepted rows in the store with the count the newest
    ``training`` record saw, and records the verdict (``retrain_check``)."""
    trail = trail or default_trail()
    accepted = accepted_rows(params)
    last = last_trained_feedback_rows(trail)
    check = RetrainCheck(
        due=accepted - (last or 0) >= params.pipeline.min_new_rows,
        accepted_rows=accepted,
        at_last_training=last,
        new_rows=accepted - (last or 0),
        min_new_rows=params.pipeline.min_new_rows,
    )
    trail.append(
        actor,
        "retrain_check",
        {"feedback_store": params.data.feedback_dir},
        {**dataclasses.asdict(check), "outcome": "due" if check.due else "not due"},
    )
    return check


def accepted_rows(params: Params) -> int:
    """Accepted feedback rows in the store (``data.feedback_dir``)."""
    from mlra.data.ingest import load_accepted

    return len(load_accepted(params.data.feedback_dir, columns=["id"]))


def last_trained_feedback_rows(trail: Trail | None = None) -> int | None:
    """The accepted feedback rows the newest ``training`` record saw (None: never trained)."""
    trail = trail or default_trail()
    if not trail.exists():
        return None
    for record in reversed(trail.records()):
        if record.action == "training" and "feedback_rows" in record.details:
            return int(record.details["feedback_rows"])
    return None


# -- faults --------------------------------------------------------------------------------------


def is_transient(exc: BaseException | None) -> bool:
    """True for faults that may pass if tried again — by exception type: connections refused or
    dropped and timeouts (``ConnectionError``, ``TimeoutError``, the HTTP clients' errors), a
    database that is busy or restarting (SQLAlchemy's ``OperationalError``), an MLflow REST call
    that failed on such a fault or with a 5xx / "already exists" answer (a concurrent writer
    created it first: the retry finds it). mlra's own errors (bad data, failed validation,
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
        if module == "mlflow" and _transient_mlflow(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _transient_mlflow(exc: BaseException) -> bool:
    """An MLflow exception whose error code says "try again" (a concurrent writer created the
    thing first; the server is unavailable), or that wraps a network or database fault: MLflow
    keeps only the message of a requests failure (retries exhausted, a timeout) or of a 5xx
    answer. A plain MlflowException defaults to INTERNAL_ERROR, so that code says nothing."""
    code = str(getattr(exc, "error_code", ""))
    if code in ("RESOURCE_ALREADY_EXISTS", "TEMPORARILY_UNAVAILABLE"):
        return True
    text = str(exc).lower()
    return any(t in text for t in _WRAPPED_FAULTS)


_WRAPPED_FAULTS = (
    "max retries exceeded",
    "connection refused",
    "connection reset",
    "connection aborted",
    "remote end closed",
    "timed out",
    "temporarily unavailable",
    "database is locked",
    "resource_already_exists",
    "502",
    "503",
    "504",
)


# -- the records -------------------------------------------------------------------------------


def _record_ingest(trail: Trail, actor: str, result: IngestResult) -> AuditRecord:
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


def _record_training(
    trail: Trail,
    actor: str,
    result: TrainResult,
    overrides: Mapping[str, Any] | None,
    feedback_rows: int | None,
) -> AuditRecord:
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
