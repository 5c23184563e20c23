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
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.audit import AuditRecord, Trail, default_trail, redact
from mlra.errors import ConfigError, IntegrityError, MlraError
from mlra.governance import (
    CHALLENGER,
    CHAMPION,
    Finding,
    LiveVersion,
    ModelState,
    project_tags,
    reconcile,
    replay,
    version_label,
)
from mlra.metrics import EvaluationMetrics
from mlra.registry.tags import (
    ADAPTER_DIR,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL,
    LAST_TAG,
    MAX_TEXT,
    METRICS_FILE,
    TRAIL_TAG,
)
from mlra.tracking import ensure_experiment, safe_name

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlra.artifact import Manifest

__all__ = [
    "Fetched",
    "Registry",
    "audit_anchors",
    "load_params_dict",
    "registry_params",
    "store_findings",
]

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def check_text(what: str, value: str) -> str:
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
    ``read_only``: the caller only reads (``mlra status``, ``mlra predict``); an embedded SQLite
    store is then read without MLflow (:mod:`mlra.registry.embedded`), checked exactly as before.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        experiment: str = DEFAULT_EXPERIMENT,
        trail: Trail | None = None,
        artifact_root: str | os.PathLike[str] | None = None,
        read_only: bool = False,
    ) -> None:
        from mlra._env import artifact_root as default_artifact_root
        from mlra._env import tracking_uri as default_tracking_uri

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.model = check_text("the registered model name", model)
        self.experiment = check_text("the experiment name", experiment)
        self.trail: Trail = trail if trail is not None else default_trail()
        self.artifact_root = Path(artifact_root or default_artifact_root()).resolve()
        self.read_only = read_only
        self._client: MlflowClient | None = None
        self._reader: Any = None

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

    @property
    def _reads(self) -> Any:
        """What answers reads: MLflow's client, or, for a ``read_only`` registry on an embedded
        SQLite store of a known schema, the file read directly (:mod:`mlra.registry.embedded`:
        no MLflow import, ~2 s less for ``mlra status`` and ``mlra predict``)."""
        if self._reader is None:
            if self.read_only:
                from mlra.registry.embedded import open_embedded

                self._reader = open_embedded(self.tracking_uri)
            if self._reader is None:
                self._reader = self.client
        return self._reader

    def exists(self) -> bool:
        """False for an embedded SQLite store that has not been created yet (nothing to read)."""
        if self.tracking_uri.startswith("sqlite:///"):
            return Path(self.tracking_uri.removeprefix("sqlite:///")).is_file()
        return True

    @property
    def lock_path(self) -> Path:
        """The file lock that serialises mutations: next to a SQLite or file store (so every
        process on that store shares it), else one per store on this machine (every checkout and
        process here shares it; other machines do not see it)."""
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            return db.with_name(db.name + ".mlra.lock")
        if uri.startswith("file://") or "://" not in uri:
            folder = Path(uri.removeprefix("file://"))
            return folder / ".mlra.lock"
        digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "mlra-locks" / f"registry-{digest}.lock"

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
        # A tracking server keeps artifacts in its own (proxied) store, where every machine can
        # reach them; only an embedded store gets a folder of this project.
        location = (
            None
            if self.tracking_uri.startswith(("http://", "https://"))
            else (self.artifact_root / safe_name(self.experiment)).as_uri()
        )
        return ensure_experiment(self.client, self.experiment, location)

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
        adapter_sha256: str | None = None,
    ) -> AuditRecord:
        """Append an audit record about this model (and ``version``, with the ``adapter_sha256``
        it is about) and anchor it in the registry: ``mlra.audit.last`` on the model and
        ``mlra.audit.<action>`` on the version (its other tags follow in :meth:`sync`)."""
        self._check_trail_tag()
        subject: dict[str, Any] = {"model": self.model, "registry": self.location}
        if version is not None:
            subject["version"] = str(version)
        if version is not None and adapter_sha256 is None and action != "registration":
            known = self.state().version(str(version))  # every record names what it is about
            adapter_sha256 = known.adapter_sha256 if known is not None else None
        if adapter_sha256 is not None:
            subject["adapter_sha256"] = adapter_sha256
        if run_id is not None:
            subject["run_id"] = run_id
        record = self.trail.append(actor, action, subject, details)
        self.client.set_registered_model_tag(self.model, LAST_TAG, _anchor(record))
        if version is not None and action != "registration":  # (registration: sync() after)
            self.client.set_model_version_tag(
                self.model, str(version), f"mlra.audit.{action}", _anchor(record)
            )
        return record

    def _check_trail_tag(self) -> None:
        """The registry names the trail its records went to; writing to another one would fork
        the history, so a mismatch stops every mutation (``mlra repair`` resets the tag)."""
        try:
            tags = self._reads.get_registered_model(self.model).tags
        except Exception as exc:  # MLflow's (or the embedded store's) error
            if _absent(exc):
                return
            raise
        recorded = tags.get(TRAIL_TAG)
        if recorded is not None and recorded != self.trail_location:
            raise IntegrityError(
                f"model {self.model!r} records its audit trail at {recorded!r}, but this trail is "
                f"{self.trail_location!r}: set MLRA_AUDIT to the recorded trail, or run "
                "`mlra audit verify` and `mlra repair` if the registry tag was edited"
            )

    @property
    def trail_location(self) -> str:
        return str(redact(self.trail.location))

    # -- typed verbs (promotion never touches the raw client) ------------------------------------

    def set_alias(self, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version`` (None: remove it)."""
        if version is None:
            if self.alias(alias) is not None:
                self.client.delete_registered_model_alias(self.model, alias)
        else:
            self.client.set_registered_model_alias(self.model, alias, str(version))

    def restore_trail_tag(self) -> None:
        """Name this trail on the registered model again (``mlra repair``)."""
        if self.client.get_registered_model(self.model).tags.get(TRAIL_TAG) != self.trail_location:
            self.client.set_registered_model_tag(self.model, TRAIL_TAG, self.trail_location)

    def last_run(self) -> dict[str, Any] | None:
        """The newest run of the experiment: id, name, status, start time (UTC)."""
        found = self._reads.get_experiment_by_name(self.experiment)
        if found is None:
            return None
        runs = self._reads.search_runs(
            [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
        )
        if not runs:
            return None
        info = runs[0].info
        started = (
            None
            if info.start_time is None
            else datetime.fromtimestamp(info.start_time / 1000, UTC).isoformat(timespec="seconds")
        )
        return {"run_id": info.run_id, "name": info.run_name, "status": info.status,
                "started": started}  # fmt: skip

    # -- the trail's view ------------------------------------------------------------------------

    def state(self) -> ModelState:
        """The model as the verified audit trail tells it (:func:`mlra.governance.replay`).

        Raises :class:`~mlra.errors.IntegrityError` when the trail does not verify against the
        registry's anchors, is missing or empty while the registry holds anchors, or is not the
        trail the registry recorded: no decision is ever taken on an unverified history."""
        self._check_trail_tag()
        anchors = self.anchors()
        if anchors and not self.trail.exists():
            raise IntegrityError(
                f"the audit trail {self.trail_location} is missing, but model {self.model!r} "
                f"holds {len(anchors)} anchors into it: restore the trail"
            )
        try:
            verification = self.trail.verify(anchors)
            records = self.trail.records() if verification.intact else []
        except (OSError, UnicodeDecodeError) as exc:
            raise IntegrityError(
                f"the audit trail {self.trail_location} cannot be read: {exc}"
            ) from exc
        if not verification.intact:
            raise IntegrityError(
                f"the audit trail {self.trail_location} does not verify ({verification}); "
                "nothing is decided on a broken history: run `mlra audit verify`"
            )
        return replay(records, self.model)

    def _registered(self, version: str | int, state: ModelState | None = None) -> Any:
        state = state or self.state()
        vs = state.version(str(version))
        if vs is None:
            raise IntegrityError(
                f"version {version} of {self.model} has no registration record in the audit "
                f"trail {self.trail_location}: it was not registered through mlra (or was "
                "copied from another version) and cannot be trusted"
            )
        return vs

    def sync(self, version: str | int, state: ModelState | None = None) -> None:
        """Write ``version``'s projected tags (:func:`mlra.governance.project_tags`) and model
        card: the registry UI shows what the trail says. Tags under ``mlra.`` that the trail
        does not explain are removed."""
        state = state or self.state()
        v = str(version)
        if v not in state.versions:
            return
        want = project_tags(state, v)
        live = self.tags(v)
        for key in sorted(set(live) - set(want)):
            if key.startswith("mlra."):
                self.client.delete_model_version_tag(self.model, v, key)
        for key, value in want.items():
            if live.get(key) != value:
                self.client.set_model_version_tag(self.model, v, key, value)
        try:
            self.refresh_card(v, state=state)
        except MlraError as exc:  # a card must never undo a decision that is recorded
            self.client.update_model_version(
                self.model, v, description=f"(model card unavailable: {exc})"
            )

    def reconcile(self, state: ModelState | None = None) -> list[Finding]:
        """Every way the live registry disagrees with the trail, one :class:`Finding` each:
        the trail itself (broken, missing, switched), each alias against the latest promotion or
        rollback, each version against its own registration record (same adapter sha256), versions
        the trail registered that are gone, and every ``mlra.*`` tag that differs from the
        projection. Empty: the registry is explained by the trail. ``state``: the trail's state
        when the caller has just read it."""
        if not self.exists():
            return []
        try:
            state = state or self.state()
        except IntegrityError as exc:
            return [Finding("trail", "audit trail", str(exc))]
        live = {
            str(mv.version): LiveVersion(
                {str(k): str(x) for k, x in mv.tags.items()}, str(redact(mv.source))
            )
            for mv in self.versions()
        }
        aliases = {a: self.alias(a) for a in (CHAMPION, CHALLENGER)}
        return reconcile(state, aliases, live)

    # -- reading -------------------------------------------------------------------------------

    def version(self, version: str | int) -> ModelVersion:
        """The model version ``version``; ConfigError naming the versions there are if absent."""
        try:
            found: ModelVersion = self._reads.get_model_version(self.model, str(version))
        except Exception as exc:  # MLflow's (or the embedded store's) error
            if not _absent(exc):
                raise
            known = [mv.version for mv in self.versions()] if self.exists() else []
            raise ConfigError(
                f"no version {version!r} of model {self.model!r} in {self.location}; "
                f"versions: {', '.join(map(str, known)) or 'none yet'}"
            ) from None
        return found

    def versions(self) -> list[ModelVersion]:
        """Every version of the model, oldest first (empty when the model does not exist)."""
        try:
            found = self._reads.search_model_versions(f"name = '{_quote(self.model)}'")
        except Exception as exc:  # MLflow's (or the embedded store's) error
            if _absent(exc):
                return []
            raise
        return sorted(found, key=lambda mv: int(mv.version))

    def alias(self, alias: str) -> str | None:
        """The version behind ``alias`` as a string (SQLite gives ints, HTTP strings), or None."""
        try:
            model = self._reads.get_registered_model(self.model)
        except Exception as exc:  # MLflow's (or the embedded store's) error
            if _absent(exc):
                return None
            raise  # the store is unreachable or failing: not the same as "no such alias"
        value = model.aliases.get(alias)
        return None if value is None else str(value)

    def tags(self, version: str | int) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.version(version).tags.items()}

    def metrics(self, version: str | int, state: ModelState | None = None) -> EvaluationMetrics:
        """The version's evaluation metrics, checked against the metrics sha256 of its
        registration record in the audit trail (not against a tag, which anyone can edit)."""
        import mlflow

        vs = self._registered(version, state)
        run_id = str(vs.details.get("run_id") or vs.registration.subject.get("run_id"))
        with tempfile.TemporaryDirectory(prefix="mlra-metrics-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=METRICS_FILE,
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
            )
            blob = Path(local).read_bytes()
        recorded = vs.details.get("metrics_sha256")
        if recorded != hashlib.sha256(blob).hexdigest():
            raise IntegrityError(
                f"version {version}: {METRICS_FILE} of run {run_id} does not match the metrics "
                f"sha256 of its registration record ({recorded}); the run's artifacts changed "
                "after registration: do not trust this version's metrics"
            )
        return EvaluationMetrics.from_dict(json.loads(blob), f"version {version} {METRICS_FILE}")

    def anchors(self) -> dict[str, int]:
        """``{record hash: seq}`` of every audit record the registry points at (for
        :meth:`mlra.audit.Trail.verify`); empty when the model is absent. Read whatever trail the
        registry names: a mismatch of trails is reported by :meth:`state`, never skipped."""
        if not self.exists():
            return {}
        try:
            model = self._reads.get_registered_model(self.model)
        except Exception as exc:  # MLflow's (or the embedded store's) error
            if _absent(exc):
                return {}
            raise
        values = [model.tags.get(LAST_TAG, "")]
        for mv in self.versions():
            values += [v for k, v in mv.tags.items() if k.startswith("mlra.audit.")]
        return dict(filter(None, (_parse_anchor(str(v)) for v in values)))

    def fetch(
        self, version: str | int, dst: str | os.PathLike[str], state: ModelState | None = None
    ) -> Fetched:
        """Download ``version``'s adapter into ``dst`` and verify it before anyone uses it.

        Everything is checked against the version's registration record in the verified audit
        trail, not against registry tags: every file against the manifest (``inspect_adapter``),
        the manifest's sha256 and base fingerprint, and the artifact's signature by the key the
        record names. Raises :class:`~mlra.errors.IntegrityError` naming what differs."""
        from mlra.artifact import inspect_adapter

        mv = self.version(version)
        vs = self._registered(mv.version, state)
        path = self._download(str(mv.source), Path(dst))
        try:
            manifest = inspect_adapter(path)
        except IntegrityError as exc:
            raise IntegrityError(f"version {mv.version} ({mv.source}): {exc}") from exc
        for key, actual in (
            ("adapter_sha256", manifest.sha256),
            ("base_fingerprint", manifest.base_fingerprint),
        ):
            recorded = str(vs.details.get(key))
            if recorded != actual:
                raise IntegrityError(
                    f"version {mv.version}: the artifact's {key} is {actual[:16]}…, its "
                    f"registration record {vs.registration.seq} says {recorded[:16]}…; the "
                    "artifact store changed after registration: do not use this version"
                )
        _verify_signature(path, mv.version, vs.details.get("signature"))
        return Fetched(str(mv.version), path, manifest, True)

    def _download(self, source: str, dst: Path) -> Path:
        """``source`` (a version's artifact folder) copied into ``dst``; its local path. A local
        folder read without MLflow copies it as MLflow's local artifact repository does."""
        from mlra.registry.embedded import EmbeddedStore

        local = _local_folder(source) if isinstance(self._reads, EmbeddedStore) else None
        if local is not None:
            target = dst / local.name
            shutil.copytree(local, target, dirs_exist_ok=True)
            return target
        import mlflow

        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(dst), tracking_uri=self.tracking_uri
            )
        )

    def fetch_champion(self, folder: str | os.PathLike[str]) -> str | None:
        """Put the champion (by the trail; the alias must agree) into ``folder`` for evaluation,
        verified, with ``champion.json`` naming its version and adapter sha256 (what
        ``mlra evaluate`` records as ``champion_ref``). Clears the folder when none serves."""
        target = Path(folder)
        shutil.rmtree(target / ADAPTER_DIR, ignore_errors=True)
        (target / "champion.json").unlink(missing_ok=True)
        version = self.resolve(CHAMPION) if self.exists() and self.alias(CHAMPION) else None
        if version is None:
            return None
        target.mkdir(parents=True, exist_ok=True)
        fetched = self.fetch(version, target)
        (target / "champion.json").write_text(
            json.dumps(
                {
                    "model": self.model,
                    "version": version,
                    "adapter_sha256": fetched.manifest.sha256,
                    "registry": self.location,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        return version

    def resolve(self, alias: str | None = None, version: str | int | None = None) -> str:
        """The version named directly or by ``alias``. An alias must point where the trail says
        (:meth:`reconcile`): a ``champion`` moved by hand is refused with IntegrityError."""
        if version is not None:
            return str(self.version(version).version)
        name = alias or CHAMPION
        found = self.alias(name) if self.exists() else None
        if found is None:
            raise ConfigError(
                f"model {self.model!r} in {self.location} has no {name!r} alias; "
                "see `mlra status` for the versions there are"
            )
        if name in (CHAMPION, CHALLENGER):
            state = self.state()
            want = state.champion if name == CHAMPION else state.challenger
            if want != found:
                raise IntegrityError(
                    f"{name!r} points at v{found}, but the audit trail says "
                    f"{version_label(want)}: the alias was moved outside mlra; refusing to serve "
                    "it (see `mlra audit verify`, `mlra repair`)"
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

    def register(self, adapter_dir: str | os.PathLike[str], **kwargs: Any) -> ModelVersion:
        """Log a run for the adapter and register it as a new model version
        (:func:`mlra.registry.registration.register`, whose keywords this takes)."""
        from mlra.registry.registration import register

        return register(self, adapter_dir, **kwargs)

    def refresh_card(self, version: str | int, **kwargs: Any) -> str:
        """Re-render ``version``'s model card (:func:`mlra.registry.registration.refresh_card`)."""
        from mlra.registry.registration import refresh_card

        return refresh_card(self, version, **kwargs)


# ---------------------------------------------------------------------------------------------
# Helpers of register()


def _verify_signature(path: Path, version: object, signature: Any) -> None:
    from mlra.signing import verify_artifact

    if not isinstance(signature, Mapping) or "identity" not in signature:
        raise IntegrityError(
            f"version {version}: its registration record holds no artifact signature; an "
            "unsigned artifact is not loaded"
        )
    try:
        verify_artifact(path, {str(signature["identity"]): str(signature["public_key"])})
    except IntegrityError as exc:
        raise IntegrityError(f"version {version}: {exc}") from exc


def _local_folder(uri: str) -> Path | None:
    """The folder a ``file://`` URI (no host) names when it exists; None for any other URI."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    folder = Path(url2pathname(parsed.path))  # as MLflow's local_file_uri_to_path
    return folder if folder.is_dir() else None


def _absent(exc: Exception) -> bool:
    """An MLflow error that says the model or version does not exist (not a failing store)."""
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# ---------------------------------------------------------------------------------------------


def audit_anchors(trail: Trail, tracking_uri: str | None = None) -> dict[str, int]:
    """The anchors of every mlra model in the store (for ``mlra audit verify``), whichever trail
    it names; empty when the store does not exist. Never creates the store."""
    registry = Registry(tracking_uri, trail=trail)
    if not registry.exists():
        return {}
    anchors: dict[str, int] = {}
    for model in registry.client.search_registered_models():
        if TRAIL_TAG in model.tags or LAST_TAG in model.tags:
            anchors |= Registry(tracking_uri, model=model.name, trail=trail).anchors()
    return anchors


def store_findings(trail: Trail, tracking_uri: str | None = None) -> list[Finding]:
    """Every disagreement between ``trail`` and the mlra models of the store: a model that
    records another trail, and each model's :meth:`Registry.reconcile` findings. Never creates
    the store."""
    registry = Registry(tracking_uri, trail=trail)
    if not registry.exists():
        return []
    location = str(redact(trail.location))
    found: list[Finding] = []
    for model in registry.client.search_registered_models():
        if TRAIL_TAG not in model.tags and LAST_TAG not in model.tags:
            continue  # not an mlra model
        recorded = model.tags.get(TRAIL_TAG)
        if recorded != location:
            found.append(
                Finding(
                    "trail",
                    f"model {model.name}",
                    f"records its audit trail at {recorded!r}, not at {location!r} (the trail "
                    "verified here): its history is not checked by this trail",
                )
            )
            continue
        for f in Registry(tracking_uri, model=model.name, trail=trail).reconcile():
            found.append(Finding(f.kind, f"{model.name} {f.subject}", f.message))
    if trail.exists() and trail.verify().intact:
        from mlra.governance import bundle_findings

        found += bundle_findings(trail.records())
    return found


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
