"""Modular adapters in the pipeline: which modules are due, each module's registry, and the bundle.

A module is an adapter with its own head for one target domain (docs/modules.md). Each module is
its own registered model, ``<registry.model_name>.<module>`` — with its own versions, gates,
approvals, ``champion`` and rollback, all under the governance rules of :mod:`mlra.governance`.
What serves is the **bundle**: every module's champion plus the router (and the base model for
the source domain). Each time a module's champion moves, a ``bundle`` record in the audit trail
names the whole set — which version of each module, which router — so "what was in production on
date D" has one answer (:func:`bundle_at`), and ``mlra audit verify`` reports a bundle record that
no longer matches the module champions (:func:`bundle_findings`).

The router is not a registered model: it is stored as the artifacts of a run in the registry's
experiment, and the bundle record names its sha256; fetching it verifies that hash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlra.audit import AuditRecord, Trail, default_trail
from mlra.errors import ConfigError, IntegrityError
from mlra.governance import (
    BundleRecord,
    bundle_at,
    bundle_findings,
    bundle_history,
    replay,
)

if TYPE_CHECKING:
    from mlra.config import Params
    from mlra.registry import Registry

__all__ = [
    "BASE",
    "BundleRecord",
    "ModuleDue",
    "bundle_at",
    "bundle_findings",
    "bundle_history",
    "fetch_router",
    "load_bundle",
    "model_name",
    "module_params_hash",
    "modules_due",
    "record_bundle",
    "registry_for",
    "store_router",
]

BASE: Final = "base"  # what the source domain (and the default fallback) is served by
ROUTER_PATH: Final = "router"  # the artifact folder of a stored router


def model_name(params: Params, module: str) -> str:
    """The registered model of ``module``: ``<registry.model_name>.<module>``."""
    if module not in params.modules.names(params.data):
        known = ", ".join(params.modules.names(params.data))
        raise ConfigError(f"unknown module {module!r}; the modules are: {known}")
    return f"{params.registry.model_name}.{module}"


def registry_for(params: Params, module: str, trail: Trail | None = None) -> Registry:
    """The registry of ``module``'s registered model (same store, experiment and trail as the
    shared model's)."""
    from mlra.registry import Registry

    return Registry(
        model=model_name(params, module), experiment=params.registry.experiment, trail=trail
    )


def module_params_hash(params: Params, module: str) -> str:
    """The hash of what a module's training depends on besides data: the data and train
    sections with the module's own adapter spec (what ``modules.overrides`` changes)."""
    from mlra.lineage import params_hash

    tp = dataclasses.replace(
        params.train, adapter=params.modules.spec(module, params.train.adapter)
    )
    return params_hash({"data": params.data, "train": tp})


# -- which modules retrain -------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleDue:
    """Whether one module retrains in this pass, and why."""

    module: str
    due: bool
    reason: str
    feedback_rows: int  # accepted feedback rows of its domain in the store now
    at_last_training: int | None  # … when it was last trained (None: never)

    @property
    def new_rows(self) -> int:
        return self.feedback_rows - (self.at_last_training or 0)


def last_module_training(records: Iterable[AuditRecord], module: str) -> AuditRecord | None:
    """The newest ``training`` record of ``module`` (None: never trained)."""
    found = None
    for r in records:
        if r.action == "training" and r.subject.get("module") == module:
            found = r
    return found


def modules_due(
    params: Params,
    feedback_by_domain: Mapping[str, int],
    trail: Trail | None = None,
) -> list[ModuleDue]:
    """Each module's verdict: due when never trained, when its domain received at least
    ``modules.min_new_rows`` accepted feedback rows since its last training, or when its
    parameters changed (:func:`module_params_hash`). ``feedback_by_domain``: accepted feedback
    rows per domain in the store now (:func:`feedback_rows_by_domain`)."""
    trail = trail or default_trail()
    records = trail.records() if trail.exists() else []
    threshold = params.modules.min_new_rows
    out = []
    for module in params.modules.names(params.data):
        now = int(feedback_by_domain.get(module, 0))
        last = last_module_training(records, module)
        if last is None:
            out.append(ModuleDue(module, True, "never trained", now, None))
            continue
        then = int(last.details.get("domain_feedback_rows", 0))
        if last.details.get("params_hash") != module_params_hash(params, module):
            out.append(ModuleDue(module, True, "its parameters changed", now, then))
        elif now - then >= threshold:
            reason = f"{now - then} new feedback rows (threshold {threshold})"
            out.append(ModuleDue(module, True, reason, now, then))
        else:
            reason = f"{now - then} new feedback rows, fewer than {threshold}"
            out.append(ModuleDue(module, False, reason, now, then))
    return out


def feedback_rows_by_domain(params: Params) -> dict[str, int]:
    """Accepted feedback rows per domain in the store (``data.feedback_dir``)."""
    from mlra.data.ingest import load_accepted

    frame = load_accepted(params.data.feedback_dir, columns=["domain"])
    return {str(k): int(v) for k, v in frame["domain"].value_counts().items()}


# -- the router's storage --------------------------------------------------------------------


def store_router(registry: Registry, router_dir: str | Path, sha256: str) -> dict[str, str]:
    """Log the router folder as the artifacts of a run in the registry's experiment; returns
    what the bundle record keeps of it (``sha256``, ``run_id``, ``artifact_uri``)."""
    client = registry.client
    run = client.create_run(
        registry._experiment_id(),
        run_name=f"router-{sha256[:12]}",
        tags={"mlra.kind": "router", "mlra.router_sha256": sha256},
    )
    try:
        client.log_artifacts(run.info.run_id, str(router_dir), ROUTER_PATH)
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id)
    return {
        "sha256": sha256,
        "run_id": run.info.run_id,
        "artifact_uri": f"{run.info.artifact_uri}/{ROUTER_PATH}",
    }


def fetch_router(registry: Registry, router: Mapping[str, Any], dst: str | Path) -> Path:
    """Download a stored router into ``dst`` and verify it against the sha256 its bundle record
    names (IntegrityError when the artifact store changed after the record)."""
    import mlflow

    from mlra.router import Router

    path = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=str(router["artifact_uri"]),
            dst_path=str(dst),
            tracking_uri=registry.tracking_uri,
        )
    )
    try:
        Router.load(path, expected_sha256=str(router["sha256"]))
    except IntegrityError as exc:
        raise IntegrityError(
            f"the router of run {router.get('run_id')} differs from what the bundle record "
            f"names: {exc}"
        ) from exc
    return path


# -- the bundle record -----------------------------------------------------------------------


def record_bundle(
    params: Params,
    actor: str,
    reason: str,
    *,
    router: Mapping[str, Any] | None = None,
    trail: Trail | None = None,
) -> BundleRecord:
    """Append the bundle that serves from now on: each module's champion by the trail (verified
    replay) and ``router`` (default: the last bundle's). Call it after every change of a module
    champion or of the router."""
    trail = trail or default_trail()
    check = trail.verify()
    if not check.intact:
        raise IntegrityError(f"the audit trail failed verification: {check}")
    records = trail.records()
    name = params.registry.model_name
    history = bundle_history(records, name)
    last = history[-1] if history else None
    modules: dict[str, dict[str, Any]] = {}
    for module in params.modules.names(params.data):
        state = replay(records, model_name(params, module))
        champion = state.champion
        sha = state.versions[champion].adapter_sha256 if champion else None
        modules[module] = {"model": state.model, "version": champion, "adapter_sha256": sha}
    chosen = dict(router) if router is not None else (last.router if last else None)
    changed = sorted(m for m, e in modules.items() if last is None or last.modules.get(m) != e) + (
        ["router"] if last is not None and chosen != last.router else []
    )
    record = trail.append(
        actor,
        "bundle",
        {"name": name, "bundle": (last.number + 1) if last else 1},
        {
            "reason": reason,
            "modules": modules,
            "router": chosen,
            "changed": changed,
            "source_domain": params.data.source_domain,
            "fallback": params.modules.router.fallback,
        },
    )
    return BundleRecord.from_record(record)


def load_bundle(
    params: Params,
    dst: str | Path,
    bundle: BundleRecord | None = None,
    *,
    trail: Trail | None = None,
    base_loader: Any = None,
) -> tuple[Any, BundleRecord]:
    """The bundle that serves now (or ``bundle``), ready to predict: every module champion it
    names fetched into ``dst`` and verified against its registration record (hashes, base
    fingerprint, signature), and its router verified against the sha256 the bundle record names.
    ``base_loader`` returns ``(encoder, tokenizer)`` (default: the packaged MiniLM)."""
    from mlra.bundle import Bundle

    trail = trail or default_trail()
    if bundle is None:
        check = trail.verify()
        if not check.intact:
            raise IntegrityError(f"the audit trail failed verification: {check}")
        bundle = bundle_at(trail.records(), params.registry.model_name)
    if bundle is None:
        raise ConfigError(
            f"no bundle of {params.registry.model_name} has been recorded yet: run `mlra run` "
            "(modules.mode: modular) first"
        )
    folder = Path(dst)
    parts: dict[str, Path] = {}
    for module, version in bundle.versions().items():
        if version is None:
            continue  # no champion yet: its domain goes to the base
        registry = registry_for(params, module, trail)
        fetched = registry.fetch(version, folder / module / "adapter")
        parts[module] = fetched.path.parent
    if bundle.router is None:
        raise ConfigError(
            f"bundle {bundle.number} has no router (no router has passed its gates yet)"
        )
    router_dir = fetch_router(registry_for(params, next(iter(bundle.modules)), trail),
                              bundle.router, folder / "router")  # fmt: skip
    model = tokenizer = None
    if base_loader is not None:
        from mlra.classifier import SentenceClassifier
        from mlra.data import LABELS

        encoder, tokenizer = base_loader()
        model = SentenceClassifier(encoder, len(LABELS), pooling=params.train.pooling)
    loaded = Bundle.load(
        parts,
        router_dir,
        router_sha256=str(bundle.router["sha256"]),
        min_confidence=params.modules.router.min_confidence,
        fallback=params.modules.router.fallback,
        model=model,
        tokenizer=tokenizer,
    )
    return loaded, bundle
