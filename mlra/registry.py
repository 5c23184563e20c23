"""The model registry: MLflow runs, adapter model versions, lineage tags, aliases, model cards.

One trained adapter becomes one MLflow **run** (params, metrics, dataset inputs with their DVC
hashes, and artifacts: the adapter directory, the validation report, the evaluation metrics and
plots, the model card) and one **model version** of the registered model, created with
``MlflowClient.create_model_version`` on the run's ``adapter`` folder (MLflow 3's
``register_model`` refuses a plain artifact folder). The version's tags carry its lineage
(:data:`LINEAGE_TAGS`); its description is its model card (:func:`render_card`).

Aliases, not stages: ``challenger`` (passed the gates) and ``champion`` (serving); moving them is
:mod:`mlra.promotion`'s job. Every mutation of the registry appends a record to the audit trail and
stores that record's ``seq:hash`` in a tag (``mlra.audit.<action>`` on the version,
``mlra.audit.last`` on the registered model), so a trail cut short is caught by
``mlra audit verify``, and every artifact fetched back is verified against the registry *and* the
registration record before anything uses it (:meth:`Registry.fetch`).

Where things live comes from the environment: ``$MLFLOW_TRACKING_URI`` (also the registry), else a
SQLite file in the project (:func:`mlra._env.tracking_uri`); experiments mlra creates keep their
artifacts under ``<project>/mlartifacts``. No secret reaches a tag, param or record: URIs with
passwords and secret-like keys are redacted with :func:`mlra.audit.redact` first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlra.audit import AuditRecord, Trail, default_trail, history, redact
from mlra.errors import ConfigError, IntegrityError, MlraError
from mlra.lineage import dvc_outs, git_commit, md5_file, params_hash

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlra.artifact import Manifest

__all__ = [
    "ADAPTER_DIR",
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_MODEL",
    "LINEAGE_TAGS",
    "DatasetRef",
    "EvaluationMetrics",
    "Fetched",
    "Registry",
    "SliceScores",
    "audit_anchors",
    "dataset_ref",
    "git_commit",
    "params_hash",
    "render_card",
]

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
DEFAULT_MODEL: Final = "mlra-sentiment"
DEFAULT_EXPERIMENT: Final = "mlra-retraining"
ADAPTER_DIR: Final = "adapter"  # the run's artifact folder that a model version points at
METRICS_FILE: Final = "evaluation/metrics.json"
CARD_FILE: Final = "model_card.md"

# Tags every version gets at registration: its lineage. Values are strings (MLflow tags are).
LINEAGE_TAGS: Final = {
    "mlra.git_commit": "commit of the code that trained it (`-dirty` if the tree had changes)",
    "mlra.data_hash": "DVC hash of the data it was trained and evaluated on",
    "mlra.params_hash": "sha256 of the canonical JSON of params.yaml as loaded",
    "mlra.base_model": "name of the base model the adapter belongs to",
    "mlra.base_fingerprint": "sha256 over the base weights the adapter touches",
    "mlra.adapter_sha256": "the artifact's one hash (its manifest's, covering every file)",
    "mlra.metrics_sha256": "sha256 of evaluation/metrics.json as logged",
    "mlra.validation": "`passed` or `failed`: the data-validation gate",
    "mlra.parent_version": "the champion it was evaluated against (`none`: the base model)",
    "mlra.mlra_version": "version of mlra that registered it",
    "mlra.run_id": "the MLflow run that logged it",
    "mlra.audit.registration": "`seq:sha256` of its registration record in the audit trail",
}
TRAIL_TAG: Final = "mlra.audit.trail"  # on the registered model: where its trail lives
LAST_TAG: Final = "mlra.audit.last"  # on the registered model: the newest record it wrote
MAX_TEXT: Final = 2000  # longest name or reason accepted (stored whole in tags and records)

DEFAULT_INTENDED_USE: Final = (
    "Classifies the sentiment (negative, neutral, positive) of short English social-media posts "
    "about the domains it was evaluated on. It assists people reviewing feedback; it is not meant "
    "for decisions about individuals, for other languages, or for domains absent from its "
    "evaluation."
)
DEFAULT_LIMITATIONS: Final = (
    "Macro-F1 on slices with few examples of a class moves with a handful of rows; read it with "
    "the support beside it.",
    "Trained on tweets: longer or more formal text is outside what it has seen.",
    "Labels are human judgements of sentiment; some domains (e.g. NFL) look labelled for stance.",
)

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# ---------------------------------------------------------------------------------------------
# The evaluation metrics (written by mlra.evaluation, read here and by the promotion gates)


@dataclass(frozen=True)
class SliceScores:
    """One slice's scores: the base model, this candidate and the champion (None: no champion)."""

    base: Mapping[str, Any]
    candidate: Mapping[str, Any]
    champion: Mapping[str, Any] | None

    @property
    def support(self) -> int:
        return int(self.candidate.get("support", 0))

    def reference(self) -> Mapping[str, Any]:
        """What the candidate is judged against: the champion, else the base model."""
        return self.champion if self.champion is not None else self.base


@dataclass(frozen=True)
class EvaluationMetrics:
    """The evaluation JSON: ``{"labels", "slices": {name: {base, candidate, champion}},
    "overall": {base, candidate, champion}}``, each score ``{accuracy, macro_f1, f1, support}``."""

    labels: tuple[str, ...]
    slices: Mapping[str, SliceScores]
    overall: SliceScores
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "metrics") -> EvaluationMetrics:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        for key in ("labels", "slices", "overall"):
            if key not in data:
                raise ConfigError(f"{where}: missing key {key!r} (see docs/governance.md)")
        if not isinstance(data["slices"], Mapping):
            raise ConfigError(f"{where}: 'slices' must map slice names to scores")
        return cls(
            labels=tuple(str(x) for x in data["labels"]),
            slices={str(k): _slice(v, f"{where}: slices.{k}") for k, v in data["slices"].items()},
            overall=_slice(data["overall"], f"{where}: overall"),
            raw=data,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvaluationMetrics:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot read the evaluation metrics {path}: {exc}") from exc


def _scores(value: Any, where: str, optional: bool = False) -> Mapping[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be scores {{accuracy, macro_f1, f1, support}}")
    for key in ("accuracy", "macro_f1", "support"):
        number = value.get(key)
        if not isinstance(number, int | float) or isinstance(number, bool):
            raise ConfigError(f"{where}.{key} must be a number, got {number!r}")
        if not math.isfinite(float(number)):
            raise ConfigError(f"{where}.{key} must be finite, got {number!r}")
    return value


def _slice(value: Any, where: str) -> SliceScores:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be {{base, candidate, champion}}")
    base, candidate = _scores(value.get("base"), f"{where}.base"), None
    candidate = _scores(value.get("candidate"), f"{where}.candidate")
    assert base is not None and candidate is not None
    return SliceScores(base, candidate, _scores(value.get("champion"), f"{where}.champion", True))


# ---------------------------------------------------------------------------------------------
# Lineage helpers


@dataclass(frozen=True)
class DatasetRef:
    """A dataset a run used, identified by its DVC hash (``digest``, at most 36 characters)."""

    name: str  # e.g. "train", "golden"
    path: str  # where it lives, relative to the project
    digest: str  # the DVC md5 (``….dir`` for a directory)
    context: str = "training"  # MLflow's dataset context: training, validation, evaluation
    rows: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.digest or len(self.digest) > 36:
            raise ConfigError(
                f"dataset {self.name!r}: needs a name and a digest of 1-36 characters "
                f"(a DVC md5), got {self.digest!r}"
            )


def dataset_ref(
    path: str | os.PathLike[str],
    name: str | None = None,
    context: str = "training",
    lock: str | os.PathLike[str] = "dvc.lock",
) -> DatasetRef:
    """A :class:`DatasetRef` for ``path`` with its DVC hash.

    The hash is the one ``dvc.lock`` records for ``path`` or for the DVC output that contains it
    (a directory's ``….dir`` hash); without a lock entry, a file's md5 (what DVC would record) or,
    for a directory, an md5 over its files' md5s (suffix ``.mlra``: not DVC's own).
    """
    target = Path(path)
    recorded = dvc_outs(lock)
    rel = os.path.normpath(str(path))
    for out, md5 in sorted(recorded.items(), key=lambda kv: -len(kv[0])):
        if rel == out or rel.startswith(out.rstrip("/") + "/"):
            return DatasetRef(name or target.stem, rel, md5, context)
    if target.is_file():
        return DatasetRef(name or target.stem, rel, md5_file(target), context)
    if target.is_dir():
        listing = "".join(
            f"{p.relative_to(target).as_posix()}\0{md5_file(p)}\n"
            for p in sorted(target.rglob("*"))
            if p.is_file()
        )
        md5 = hashlib.md5(listing.encode(), usedforsecurity=False).hexdigest()
        return DatasetRef(name or target.name, rel, md5 + ".mlra", context)
    raise ConfigError(f"dataset {path}: no such file or directory, and no entry in {lock}")


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
                    out[_METRIC_KEY.sub("_", f"{name}.{who}.{key}")] = float(scores[key])
    return out


def _check_text(what: str, value: str) -> str:
    """Names and reasons are stored exactly as given; refuse only what cannot be stored whole."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty text, got {value!r}")
    if len(value) > MAX_TEXT:
        raise ConfigError(f"{what} is {len(value)} characters long; at most {MAX_TEXT} are kept")
    if "\0" in value:
        raise ConfigError(f"{what} contains a NUL character, which a database cannot store")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _anchor(record: AuditRecord) -> str:
    return f"{record.seq}:{record.hash}"


def _parse_anchor(value: str) -> tuple[str, int] | None:
    seq, _, digest = value.partition(":")
    if seq.isdigit() and re.fullmatch(r"[0-9a-f]{64}", digest):
        return digest, int(seq)
    return None


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Fetched:
    """A version's adapter, downloaded and verified (files, registry tags, registration record)."""

    version: str
    path: Path
    manifest: Manifest
    audit_checked: bool  # False only when the registry's trail is not the one opened here


class Registry:
    """One registered model in one MLflow store, with the audit trail its events go to.

    ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI`` or the project's SQLite file; ``model``
    and ``experiment`` to :data:`DEFAULT_MODEL` / :data:`DEFAULT_EXPERIMENT` (params.yaml's
    ``registry`` section when the CLI builds it); ``trail`` to :func:`mlra.audit.default_trail`.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        experiment: str = DEFAULT_EXPERIMENT,
        trail: Trail | None = None,
        artifact_root: str | os.PathLike[str] | None = None,
    ) -> None:
        from mlra._env import artifact_root as default_artifact_root
        from mlra._env import tracking_uri as default_tracking_uri

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.model = _check_text("the registered model name", model)
        self.experiment = _check_text("the experiment name", experiment)
        self.trail: Trail = trail if trail is not None else default_trail()
        self.artifact_root = Path(artifact_root or default_artifact_root()).resolve()
        self._client: MlflowClient | None = None

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """The tracking URI with any password redacted: safe to print and record."""
        return str(redact(self.tracking_uri))

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                    parents=True, exist_ok=True
                )
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def exists(self) -> bool:
        """False for an embedded SQLite store that has not been created yet (nothing to read)."""
        if self.tracking_uri.startswith("sqlite:///"):
            return Path(self.tracking_uri.removeprefix("sqlite:///")).is_file()
        return True

    @property
    def lock_path(self) -> Path:
        """The file lock that serialises mutations: next to a SQLite or file store (so every
        process on that store shares it), else in the project folder (one machine only)."""
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            return db.with_name(db.name + ".mlra.lock")
        if uri.startswith("file://") or "://" not in uri:
            folder = Path(uri.removeprefix("file://"))
            return folder / ".mlra.lock"
        from mlra._env import project_dir

        return project_dir() / "registry.lock"

    @property
    def lock_is_shared(self) -> bool:
        """Whether :attr:`lock_path` is seen by every writer of the store (SQLite / file stores)."""
        return (
            self.tracking_uri.startswith(("sqlite:///", "file://"))
            or "://" not in self.tracking_uri
        )

    @contextlib.contextmanager
    def locked(self, timeout: float = 300.0) -> Iterator[None]:
        """Hold the registry's mutation lock (registrations, gates, approvals, promotions)."""
        from filelock import FileLock, Timeout

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.lock_path), timeout=timeout):
                yield
        except Timeout as exc:
            raise MlraError(
                f"another mlra process has held the registry lock {self.lock_path} for "
                f"{timeout:.0f} s; retry when it has finished"
            ) from exc

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        # A tracking server keeps artifacts in its own (proxied) store, where every machine can
        # reach them; only an embedded store gets a folder of this project.
        location = (
            None
            if self.tracking_uri.startswith(("http://", "https://"))
            else (self.artifact_root / _safe_name(self.experiment)).as_uri()
        )
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.create_experiment(self.experiment, artifact_location=location))
        except MlflowException:  # created meanwhile by another process
            again = self.client.get_experiment_by_name(self.experiment)
            if again is None:
                raise
            return str(again.experiment_id)

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model)
        except MlflowException as exc:
            if not _absent(exc):
                raise
            with contextlib.suppress(MlflowException):  # another process may win the race
                self.client.create_registered_model(
                    self.model,
                    tags={TRAIL_TAG: str(redact(self.trail.location))},
                    description="Low-rank adapters trained by mlra. Each version's description "
                    "is its model card; `champion` serves, `challenger` passed the gates.",
                )

    def record(
        self,
        actor: str,
        action: str,
        version: str | None,
        details: Mapping[str, Any],
        *,
        run_id: str | None = None,
    ) -> AuditRecord:
        """Append an audit record about this model (and ``version``) and anchor it in the
        registry: ``mlra.audit.<action>`` on the version, ``mlra.audit.last`` on the model."""
        subject: dict[str, Any] = {"model": self.model, "registry": self.location}
        if version is not None:
            subject["version"] = str(version)
        if run_id is not None:
            subject["run_id"] = run_id
        record = self.trail.append(actor, action, subject, details)
        if version is not None:
            self.client.set_model_version_tag(
                self.model, str(version), f"mlra.audit.{action}", _anchor(record)
            )
        self.client.set_registered_model_tag(self.model, LAST_TAG, _anchor(record))
        self.client.set_registered_model_tag(
            self.model, TRAIL_TAG, str(redact(self.trail.location))
        )
        return record

    # -- reading -------------------------------------------------------------------------------

    def version(self, version: str | int) -> ModelVersion:
        """The model version ``version``; ConfigError naming the versions there are if absent."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.model, str(version))
        except MlflowException as exc:
            if not _absent(exc):
                raise
            known = [mv.version for mv in self.versions()] if self.exists() else []
            raise ConfigError(
                f"no version {version!r} of model {self.model!r} in {self.location}; "
                f"versions: {', '.join(map(str, known)) or 'none yet'}"
            ) from None

    def versions(self) -> list[ModelVersion]:
        """Every version of the model, oldest first (empty when the model does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{_quote(self.model)}'")
        except MlflowException as exc:
            if _absent(exc):
                return []
            raise
        return sorted(found, key=lambda mv: int(mv.version))

    def alias(self, alias: str) -> str | None:
        """The version behind ``alias`` as a string (SQLite gives ints, HTTP strings), or None."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.model)
        except MlflowException as exc:
            if _absent(exc):
                return None
            raise  # the store is unreachable or failing: not the same as "no such alias"
        value = model.aliases.get(alias)
        return None if value is None else str(value)

    def tags(self, version: str | int) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.version(version).tags.items()}

    def metrics(self, version: str | int) -> EvaluationMetrics:
        """The version's evaluation metrics, checked against ``mlra.metrics_sha256``."""
        import mlflow

        tags = self.tags(version)
        run_id = tags.get("mlra.run_id") or self.version(version).run_id
        with tempfile.TemporaryDirectory(prefix="mlra-metrics-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=METRICS_FILE,
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
            )
            blob = Path(local).read_bytes()
        recorded = tags.get("mlra.metrics_sha256")
        if recorded != hashlib.sha256(blob).hexdigest():
            raise IntegrityError(
                f"version {version}: {METRICS_FILE} of run {run_id} does not match the "
                f"mlra.metrics_sha256 tag ({recorded}); the run's artifacts changed after "
                "registration: do not trust this version's metrics"
            )
        return EvaluationMetrics.from_dict(json.loads(blob), f"version {version} {METRICS_FILE}")

    def anchors(self) -> dict[str, int]:
        """``{record hash: seq}`` of every audit record the registry points at (for
        :meth:`mlra.audit.Trail.verify`); empty when the model is absent or uses another trail."""
        if not self.exists():
            return {}
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.model)
        except MlflowException as exc:
            if _absent(exc):
                return {}
            raise
        if model.tags.get(TRAIL_TAG) != str(redact(self.trail.location)):
            return {}
        values = [model.tags.get(LAST_TAG, "")]
        for mv in self.versions():
            values += [v for k, v in mv.tags.items() if k.startswith("mlra.audit.")]
        return dict(filter(None, (_parse_anchor(str(v)) for v in values)))

    def fetch(self, version: str | int, dst: str | os.PathLike[str]) -> Fetched:
        """Download ``version``'s adapter into ``dst`` and verify it before anyone uses it.

        Checks: every file against the manifest (``inspect_adapter``); the manifest's sha256 and
        base fingerprint against the version's tags; and those tags against the registration
        record in the audit trail (a tag edited in the registry is caught there). Raises
        :class:`~mlra.errors.IntegrityError` naming what differs.
        """
        import mlflow

        from mlra.artifact import inspect_adapter

        mv = self.version(version)
        tags = {str(k): str(v) for k, v in mv.tags.items()}
        missing = [t for t in ("mlra.adapter_sha256", "mlra.base_fingerprint") if t not in tags]
        if missing:
            raise IntegrityError(
                f"version {mv.version} of {self.model} lacks {', '.join(missing)}: it was not "
                "registered by mlra and cannot be verified"
            )
        path = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=str(dst), tracking_uri=self.tracking_uri
            )
        )
        try:
            manifest = inspect_adapter(path)
        except IntegrityError as exc:
            raise IntegrityError(f"version {mv.version} ({mv.source}): {exc}") from exc
        for tag, actual in (
            ("mlra.adapter_sha256", manifest.sha256),
            ("mlra.base_fingerprint", manifest.base_fingerprint),
        ):
            if tags[tag] != actual:
                raise IntegrityError(
                    f"version {mv.version}: the artifact's {tag.removeprefix('mlra.')} is "
                    f"{actual[:16]}…, the registry recorded {tags[tag][:16]}…; the artifact "
                    "store changed after registration: do not use this version"
                )
        return Fetched(str(mv.version), path, manifest, self._check_registration(mv.version, tags))

    def _check_registration(self, version: str | int, tags: Mapping[str, str]) -> bool:
        model_tags = self.client.get_registered_model(self.model).tags
        if model_tags.get(TRAIL_TAG) != str(redact(self.trail.location)):
            return False  # the registry's trail is elsewhere: nothing here to check against
        anchor = _parse_anchor(tags.get("mlra.audit.registration", ""))
        if anchor is None:
            raise IntegrityError(
                f"version {version} has no registration record anchor (mlra.audit.registration); "
                "it was not registered through mlra"
            )
        found = [r for r in self.trail.records() if r.hash == anchor[0]]
        if not found or found[0].seq != anchor[1]:
            raise IntegrityError(
                f"version {version}: its registration record {anchor[1]} ({anchor[0][:12]}) is "
                f"not in the audit trail {self.trail.location}; run `mlra audit verify`"
            )
        details = found[0].details
        for key in ("adapter_sha256", "base_fingerprint", "metrics_sha256"):
            if details.get(key) != tags.get(f"mlra.{key}"):
                raise IntegrityError(
                    f"version {version}: tag mlra.{key} ({tags.get(f'mlra.{key}')}) differs from "
                    f"its registration record ({details.get(key)}): the tag was edited"
                )
        return True

    def resolve(self, alias: str | None = None, version: str | int | None = None) -> str:
        """The version named directly or by ``alias``; ConfigError when the alias is not set."""
        if version is not None:
            return str(self.version(version).version)
        name = alias or CHAMPION
        found = self.alias(name) if self.exists() else None
        if found is None:
            raise ConfigError(
                f"model {self.model!r} in {self.location} has no {name!r} alias; "
                "see `mlra status` for the versions there are"
            )
        return found

    def load_model(
        self,
        version: str | int,
        dst: str | os.PathLike[str],
        base_loader: Callable[[], tuple[Any, Any]] | None = None,
    ) -> tuple[Any, Any, Fetched]:
        """``(classifier, tokenizer, fetched)``: the base model with ``version``'s adapter and
        head loaded strictly, after :meth:`fetch` verified the artifact. ``base_loader`` returns
        ``(encoder, tokenizer)`` (default: the packaged MiniLM)."""
        from mlra.artifact import load_adapter
        from mlra.classifier import SentenceClassifier
        from mlra.data import LABELS

        fetched = self.fetch(version, dst)
        if base_loader is None:
            from mlra.base_model import load_base_model

            base_loader = load_base_model
        encoder, tokenizer = base_loader()
        pooling = str(fetched.manifest.metadata.get("pooling", "mean"))  # as it was trained
        model = SentenceClassifier(encoder, len(LABELS), pooling=pooling)
        load_adapter(model, fetched.path, strict=True)  # checks the base fingerprint too
        return model, tokenizer, fetched

    # -- registering ---------------------------------------------------------------------------

    def register(
        self,
        adapter_dir: str | os.PathLike[str],
        *,
        metrics: EvaluationMetrics | Mapping[str, Any] | str | os.PathLike[str],
        validation: Mapping[str, Any] | str | os.PathLike[str],
        params: Mapping[str, Any],
        datasets: Sequence[DatasetRef] = (),
        plots: Sequence[str | os.PathLike[str]] = (),
        commit: str | None = None,
        actor: str = "pipeline",
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
        p_hash = params_hash(plain_params)
        data_hash = _data_hash(datasets)
        metrics_blob = json.dumps(evaluation.raw, indent=2, sort_keys=True).encode()

        # -- the run: params, metrics, inputs, artifacts (outside the lock: it takes a while) --
        from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag

        client = self.client
        own_run = run_id is None
        if run_id is None:
            run = client.create_run(
                self._experiment_id(),
                run_name=run_name,
                tags={"mlra.adapter": manifest.name, "mlra.git_commit": commit or git_commit()},
            )
        else:
            run = client.get_run(run_id)
        run_id = run.info.run_id
        try:
            flat = _flatten(plain_params) | {
                f"adapter.{k}": v for k, v in manifest.spec.to_dict().items()
            }
            have = run.data.params  # an existing run's params are immutable: keep them
            items = [
                Param(k[:250], str(v)[:6000]) for k, v in sorted(flat.items()) if k not in have
            ]
            now = int(datetime.now(UTC).timestamp() * 1000)
            scores = [Metric(k, v, now, 0) for k, v in sorted(_metric_items(evaluation).items())]
            for start in range(0, max(len(items), len(scores)), 100):
                client.log_batch(
                    run_id, params=items[start : start + 100], metrics=scores[start : start + 100]
                )
            client.log_batch(run_id, tags=[RunTag("mlra.params_hash", p_hash)])
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

        # -- the version: created, recorded and anchored under the lock ------------------------
        with self.locked():
            self._ensure_model()
            parent = self.alias(CHAMPION)
            if (evaluation.overall.champion is None) != (parent is None):
                raise ConfigError(
                    "the evaluation metrics compare against "
                    + ("a champion" if parent is None else "no champion")
                    + f", but the registry's champion is {'v' + parent if parent else 'none'}: "
                    "evaluate again against the current champion"
                )
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
            }
            tags = {k: str(redact(v)) for k, v in tags.items()}
            mv = client.create_model_version(
                self.model,
                source=f"{run.info.artifact_uri}/{ADAPTER_DIR}",
                run_id=run_id,
                tags=tags,
                description="(model card pending: registration in progress)",
            )
            version = str(mv.version)
            self.record(
                actor,
                "registration",
                version,
                {k.removeprefix("mlra."): v for k, v in tags.items()}
                | {
                    "source": str(redact(mv.source)),
                    "datasets": [d.__dict__ for d in datasets],
                    "intended_use": intended_use,
                    "limitations": list(limitations),
                },
                run_id=run_id,
            )
            card = self.refresh_card(version, evaluation=evaluation)
        with tempfile.TemporaryDirectory(prefix="mlra-card-") as tmp:
            (Path(tmp) / CARD_FILE).write_text(card, encoding="utf-8")
            client.log_artifact(run_id, str(Path(tmp) / CARD_FILE))
        return self.version(version)

    # -- the model card ------------------------------------------------------------------------

    def refresh_card(
        self,
        version: str | int,
        *,
        evaluation: EvaluationMetrics | None = None,
        intended_use: str | None = None,
        limitations: Sequence[str] | None = None,
    ) -> str:
        """Re-render ``version``'s model card from its tags, metrics and audit history and store
        it as the version's description. Returns the Markdown."""
        mv = self.version(version)
        tags = {str(k): str(v) for k, v in mv.tags.items()}
        events = history(self.trail, model=self.model, version=str(mv.version))
        registered = next((e.details for e in events if e.action == "registration"), {})
        if intended_use is None:
            intended_use = str(registered.get("intended_use") or DEFAULT_INTENDED_USE)
        if limitations is None:
            limitations = tuple(registered.get("limitations") or DEFAULT_LIMITATIONS)
        card = render_card(
            model=self.model,
            version=str(mv.version),
            tags=tags,
            metrics=evaluation or self.metrics(version),
            events=events,
            aliases=[a for a in (CHAMPION, CHALLENGER) if self.alias(a) == str(mv.version)],
            intended_use=intended_use,
            limitations=tuple(limitations),
        )
        self.client.update_model_version(self.model, str(mv.version), description=card)
        return card


# ---------------------------------------------------------------------------------------------
# Helpers of register()


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


def _meta_dataset(ref: DatasetRef) -> Any:
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow registers the local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(ref.path)
    return MetaDataset(source, name=ref.name, digest=ref.digest)  # type: ignore[abstract]


def _absent(exc: Exception) -> bool:
    """An MLflow error that says the model or version does not exist (not a failing store)."""
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _base_model_name(adapter: Path) -> str:
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    return str(config.get("base_model_name_or_path") or "unknown")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# ---------------------------------------------------------------------------------------------
# The model card


def _cell(value: object) -> str:
    """A value safe inside a Markdown table cell (no pipe or newline can break the table)."""
    return (
        str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def render_card(
    *,
    model: str,
    version: str,
    tags: Mapping[str, str],
    metrics: EvaluationMetrics,
    events: Sequence[AuditRecord],
    aliases: Sequence[str],
    intended_use: str = DEFAULT_INTENDED_USE,
    limitations: Sequence[str] = DEFAULT_LIMITATIONS,
    min_support: int = 50,
) -> str:
    """The model card in Markdown: intended use, base model, data and its validation, metrics per
    slice against the champion, known limitations, approvals and the audit anchors."""
    t = dict(tags)
    parent = t.get("mlra.parent_version", "none")
    against = f"champion v{parent}" if parent != "none" else "base model (no champion)"
    approvals = [e for e in events if e.action in ("approval", "rejection")]
    status = ", ".join(f"`{a}`" for a in aliases) or _pending_status(t)
    lines = [
        f"# {model} — version {version}",
        "",
        f"**Status:** {status} · **validation:** {t.get('mlra.validation', '?')} · "
        f"**registered by run** `{t.get('mlra.run_id', '?')}`",
        "",
        "## Intended use",
        "",
        intended_use,
        "",
        "## Base model",
        "",
        f"`{_cell(t.get('mlra.base_model', 'unknown'))}` with fingerprint "
        f"`{t.get('mlra.base_fingerprint', '?')}`. The adapter loads only onto a base model whose "
        "targeted weights hash to this value (`mlra.load_adapter` checks it).",
        "",
        "## Data and its validation",
        "",
        f"- data (DVC hash): `{t.get('mlra.data_hash', '?')}`",
        f"- validation gate: **{t.get('mlra.validation', '?')}** (report: run artifact "
        "`validation/`)",
        f"- params hash: `{t.get('mlra.params_hash', '?')}`",
        f"- code: `{t.get('mlra.git_commit', '?')}`",
        "",
        f"## Metrics per slice (macro-F1) against the {against}",
        "",
        "| slice | support | base | champion | candidate | Δ vs reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    small, regress = [], []
    for name, sl in [*sorted(metrics.slices.items()), ("**overall**", metrics.overall)]:
        cand = float(sl.candidate["macro_f1"])
        champ = None if sl.champion is None else float(sl.champion["macro_f1"])
        delta = cand - float(sl.reference()["macro_f1"])
        lines.append(
            f"| {_cell(name)} | {sl.support} | {_fmt(float(sl.base['macro_f1']))} | "
            f"{_fmt(champ)} | {_fmt(cand)} | {delta:+.3f} |"
        )
        if name != "**overall**" and sl.support < min_support:
            small.append(name)
        if delta < 0:
            regress.append(f"{name} ({delta:+.3f})")
    lines += ["", "## Known limitations", ""]
    lines += [f"- {item}" for item in limitations]
    if small:
        lines.append(f"- **Measured:** fewer than {min_support} examples in: {', '.join(small)}.")
    if regress:
        lines.append(f"- **Measured:** worse than the reference on: {', '.join(regress)}.")
    lines += ["", "## Approvals", ""]
    if approvals:
        lines += ["| time (UTC) | by | decision | reason |", "|---|---|---|---|"]
        lines += [
            f"| {e.time[:19]} | {_cell(e.actor)} | {e.action} | "
            f"{_cell(e.details.get('reason', ''))} |"
            for e in approvals
        ]
    else:
        lines.append("None yet.")
    lines += ["", "## History (audit trail)", "", "| seq | time (UTC) | actor | action | outcome |"]
    lines.append("|---:|---|---|---|---|")
    lines += [
        f"| {e.seq} | {e.time[:19]} | {_cell(e.actor)} | {e.action} | "
        f"{_cell(e.details.get('outcome', e.details.get('reason', '')))} |"
        for e in events
    ]
    lines += [
        "",
        "## Lineage",
        "",
        *[
            f"- `{k}`: `{_cell(v)}`"
            for k, v in sorted(t.items())
            if k.startswith("mlra.") and not k.endswith("_reason")  # reasons: see Approvals
        ],
        "",
    ]
    return "\n".join(lines)


def _pending_status(tags: Mapping[str, str]) -> str:
    if "mlra.rolled_back_at" in tags:
        return "rolled back (was champion)"
    if "mlra.rejected_by" in tags:
        return "rejected"
    gate = tags.get("mlra.gate")
    if gate is None:
        return "registered (gates not run yet)"
    if gate != "passed":
        return f"refused ({gate})"
    return "approved, not promoted" if "mlra.approved_by" in tags else "awaiting approval"


def audit_anchors(trail: Trail, tracking_uri: str | None = None) -> dict[str, int]:
    """The anchors of every registered model in the store whose trail is ``trail`` (for
    ``mlra audit verify``); empty when the store does not exist. Never creates the store."""
    registry = Registry(tracking_uri, trail=trail)
    if not registry.exists():
        return {}
    anchors: dict[str, int] = {}
    for model in registry.client.search_registered_models():
        if model.tags.get(TRAIL_TAG) == str(redact(trail.location)):
            anchors |= Registry(tracking_uri, model=model.name, trail=trail).anchors()
    return anchors


# ---------------------------------------------------------------------------------------------
# Settings from params.yaml


def registry_params(path: str | os.PathLike[str] = "params.yaml") -> dict[str, str]:
    """params.yaml's ``registry`` section (``model_name``, ``experiment``), checked."""
    from mlra.config import load_params

    section = load_params(Path(path)).registry
    return {"model_name": section.model_name, "experiment": section.experiment}


def load_params_dict(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Any]:
    """params.yaml as checked by :func:`mlra.config.load_params`, as plain data (to log)."""
    from mlra.config import load_params

    return load_params(Path(path)).to_dict()
