"""Registering a candidate: the MLflow run, the signed model version and its registration
record (the version's lineage, which every later decision reads back from the trail), and the
model card rendered from the trail's state."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.audit import history, redact
from mlra.errors import ConfigError
from mlra.governance import CHALLENGER, CHAMPION, ModelState, key_identity, project_tags
from mlra.lineage import DatasetRef, git_commit, params_hash
from mlra.metrics import EvaluationMetrics
from mlra.registry.card import DEFAULT_INTENDED_USE, DEFAULT_LIMITATIONS, render_card
from mlra.registry.store import Registry
from mlra.registry.tags import ADAPTER_DIR, CARD_FILE
from mlra.tracking import log_candidate_run

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["refresh_card", "register"]


def register(
    registry: Registry,
    adapter_dir: str | os.PathLike[str],
    *,
    metrics: EvaluationMetrics | Mapping[str, Any] | str | os.PathLike[str],
    validation: Mapping[str, Any] | str | os.PathLike[str],
    params: Mapping[str, Any],
    datasets: Sequence[DatasetRef] = (),
    plots: Sequence[str | os.PathLike[str]] = (),
    commit: str | None = None,
    actor: str = "pipeline",
    trained_by: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    intended_use: str = DEFAULT_INTENDED_USE,
    limitations: Sequence[str] = DEFAULT_LIMITATIONS,
) -> ModelVersion:
    """Log a run for the adapter at ``adapter_dir`` and register it as a new model version.

    ``metrics``: the evaluation JSON (a path, a mapping or :class:`EvaluationMetrics`).
    ``validation``: the validation report (a path to ``report.json`` or its mapping; its
    ``passed`` decides the ``mlra.validation`` tag). ``params``: params.yaml as loaded
    (``Params.to_dict()``). ``datasets``: the data, with DVC hashes (:func:`dataset_ref`).
    ``run_id``: log into that existing run (e.g. the training run Lightning's MLflow logger
    opened; params it already has are kept) instead of a new one. The champion at this moment
    is recorded as the parent: the metrics' ``champion`` scores must be that version's.
    Returns the new version (tags and card in place).
    """
    from mlra import __version__
    from mlra.artifact import inspect_adapter

    adapter = Path(adapter_dir)
    manifest = inspect_adapter(adapter)  # verifies before anything is logged
    evaluation = _as_metrics(metrics)
    report, report_path = _as_report(validation)
    passed = report.get("passed")
    if not isinstance(passed, bool):
        raise ConfigError(f"the validation report needs a boolean 'passed', got {passed!r}")
    plain_params = redact(dict(params))
    # one params hash everywhere: the training's (data + train sections, in the manifest)
    p_hash = str(manifest.metadata.get("params_hash") or params_hash(plain_params))
    data_hash = _data_hash(datasets)
    metrics_blob = json.dumps(evaluation.raw, indent=2, sort_keys=True).encode()
    _check_champion_ref(evaluation, registry.state() if registry.exists() else None)  # fail early
    signature = _sign(adapter, actor)  # signature.json beside the manifest, before upload

    # -- the run: params, metrics, inputs, artifacts (outside the lock: it takes a while) --
    run = log_candidate_run(
        registry.client,
        registry._experiment_id(),
        adapter,
        manifest,
        run_id=run_id,
        run_name=run_name,
        params=plain_params,
        params_hash=p_hash,
        evaluation=evaluation,
        metrics_blob=metrics_blob,
        report=report,
        report_path=report_path,
        datasets=datasets,
        plots=plots,
        commit=commit or git_commit(),
    )
    run_id = run.info.run_id
    client = registry.client

    # -- the version: created, recorded and anchored under the lock ------------------------
    with registry.locked():
        registry._ensure_model()
        state = registry.state()
        parent = state.champion
        _check_champion_ref(evaluation, state)
        tags = {
            "mlra.git_commit": commit or git_commit(),
            "mlra.data_hash": data_hash,
            "mlra.params_hash": p_hash,
            "mlra.base_model": _base_model_name(adapter),
            "mlra.base_fingerprint": manifest.base_fingerprint,
            "mlra.adapter_sha256": manifest.sha256,
            "mlra.metrics_sha256": hashlib.sha256(metrics_blob).hexdigest(),
            "mlra.validation": "passed" if passed else "failed",
            "mlra.parent_version": parent or "none",
            "mlra.mlra_version": __version__,
            "mlra.run_id": run_id,
            "mlra.training_run_id": str(manifest.metadata.get("mlflow_run_id") or "none"),
        }
        tags = {k: str(redact(v)) for k, v in tags.items()}
        mv = client.create_model_version(
            registry.model,
            source=f"{run.info.artifact_uri}/{ADAPTER_DIR}",
            run_id=run_id,
            tags=tags,
            description="(model card pending: registration in progress)",
        )
        version = str(mv.version)
        registry.record(
            actor,
            "registration",
            version,
            {k.removeprefix("mlra."): v for k, v in tags.items()}
            | {
                "source": str(redact(mv.source)),
                "datasets": [d.__dict__ for d in datasets],
                "intended_use": intended_use,
                "limitations": list(limitations),
                "trained_by": trained_by or actor,
                "signature": signature,
                "champion_ref": evaluation.raw.get("champion_ref"),
            },
            run_id=run_id,
            adapter_sha256=manifest.sha256,
        )
        state = registry.state()
        registry.sync(version, state)
        card = registry.refresh_card(version, evaluation=evaluation, state=state)
    with tempfile.TemporaryDirectory(prefix="mlra-card-") as tmp:
        (Path(tmp) / CARD_FILE).write_text(card, encoding="utf-8")
        client.log_artifact(run_id, str(Path(tmp) / CARD_FILE))
    return registry.version(version)


# -- the model card ------------------------------------------------------------------------


def refresh_card(
    registry: Registry,
    version: str | int,
    *,
    evaluation: EvaluationMetrics | None = None,
    intended_use: str | None = None,
    limitations: Sequence[str] | None = None,
    state: ModelState | None = None,
) -> str:
    """Re-render ``version``'s model card from the trail (its projected tags, its audit
    history) and its metrics, and store it as the version's description. Returns the
    Markdown."""
    mv = registry.version(version)
    state = state or registry.state()
    tags = project_tags(state, str(mv.version)) if str(mv.version) in state.versions else {}
    events = history(registry.trail, model=registry.model, version=str(mv.version))
    registered = next((e.details for e in events if e.action == "registration"), {})
    if intended_use is None:
        intended_use = str(registered.get("intended_use") or DEFAULT_INTENDED_USE)
    if limitations is None:
        limitations = tuple(registered.get("limitations") or DEFAULT_LIMITATIONS)
    vs = state.version(str(mv.version))
    run_link, plots = _run_links(registry, tags.get("mlra.run_id"))
    training = tags.get("mlra.training_run_id")
    training_link = _run_links(registry, training)[0] if training and training != "none" else None
    card = render_card(
        model=registry.model,
        version=str(mv.version),
        tags=tags,
        status=vs.status if vs is not None else "not registered through mlra",
        metrics=evaluation or registry.metrics(version, state),
        events=events,
        aliases=[
            a
            for a, v in ((CHAMPION, state.champion), (CHALLENGER, state.challenger))
            if v == str(mv.version)
        ],
        intended_use=intended_use,
        limitations=tuple(limitations),
        run_link=run_link,
        plot_names=plots,
        training_link=training_link,
    )
    registry.client.update_model_version(registry.model, str(mv.version), description=card)
    return card


def _run_links(registry: Registry, run_id: str | None) -> tuple[str | None, list[str]]:
    """The MLflow UI address of a run (relative to the UI, as the card links it) and the
    names of its evaluation plots."""
    if not run_id:
        return None, []
    from mlflow.exceptions import MlflowException

    try:
        run = registry.client.get_run(run_id)
        plots = [
            Path(f.path).name
            for f in registry.client.list_artifacts(run_id, "evaluation/plots")
            if f.path.endswith(".png")
        ]
    except MlflowException:
        return None, []
    return f"#/experiments/{run.info.experiment_id}/runs/{run_id}", sorted(plots)


def _as_metrics(
    value: EvaluationMetrics | Mapping[str, Any] | str | os.PathLike[str],
) -> EvaluationMetrics:
    if isinstance(value, EvaluationMetrics):
        return value
    if isinstance(value, Mapping):
        return EvaluationMetrics.from_dict(value)
    return EvaluationMetrics.load(value)


def _as_report(
    value: Mapping[str, Any] | str | os.PathLike[str],
) -> tuple[dict[str, Any], Path | None]:
    if isinstance(value, Mapping):
        return dict(value), None
    path = Path(value)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the validation report {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the validation report {path} is not a JSON object")
    return data, path


def _data_hash(datasets: Sequence[DatasetRef]) -> str:
    """The one data hash of a run: the DVC hash of its single dataset, else a sha256 over all."""
    if not datasets:
        return "none"
    if len({d.digest for d in datasets}) == 1:
        return datasets[0].digest
    listing = "\n".join(f"{d.name}:{d.digest}" for d in sorted(datasets, key=lambda d: d.name))
    return hashlib.sha256(listing.encode()).hexdigest()


def _check_champion_ref(evaluation: EvaluationMetrics, state: ModelState | None) -> None:
    """Metrics must have been evaluated against the champion that serves *now* (by the trail):
    the version and the adapter sha256 the evaluation names (``champion_ref``) are compared."""
    champion = state.champion if state is not None else None
    has_scores = evaluation.overall.champion is not None
    if champion is None:
        if has_scores:
            raise ConfigError(
                "the evaluation metrics compare against a champion, but no champion serves "
                "(by the audit trail): evaluate again without one"
            )
        return
    assert state is not None
    if not has_scores:
        raise ConfigError(
            f"the evaluation metrics compare against no champion, but v{champion} is the champion:"
            " evaluate again against it"
        )
    ref = evaluation.raw.get("champion_ref")
    want_sha = state.versions[champion].adapter_sha256 if champion in state.versions else ""
    if not isinstance(ref, Mapping) or "version" not in ref:
        raise ConfigError(
            "the evaluation metrics do not name the champion they were evaluated against "
            f"(no 'champion_ref'); the champion is v{champion} ({want_sha[:12]}…): evaluate again"
        )
    got_v, got_sha = str(ref.get("version")), str(ref.get("adapter_sha256", ""))
    if got_v != champion or got_sha != want_sha:
        raise ConfigError(
            f"the evaluation compared against v{got_v} ({got_sha[:12]}…), but the champion is "
            f"now v{champion} ({want_sha[:12]}…): evaluate again against the current champion"
        )


def _sign(adapter: Path, identity: str) -> dict[str, Any]:
    """Sign the artifact's manifest with ``identity``'s key from the keyring (created on first
    use); the signature is recorded in the registration record."""
    from mlra.signing import Keyring, sign_artifact

    return dict(sign_artifact(adapter, Keyring().signer(key_identity(identity))).to_dict())


def _base_model_name(adapter: Path) -> str:
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    return str(config.get("base_model_name_or_path") or "unknown")
