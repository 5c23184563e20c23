"""Reading an embedded (SQLite) MLflow store without importing MLflow.

``import mlflow`` and opening its SQLAlchemy store take ~2 s, most of ``mlra status`` and a third
of ``mlra predict``, which only *read* a few rows: a registered model's tags and aliases, its
versions' tags and sources, the newest run of an experiment. :class:`EmbeddedStore` answers those
reads from the SQLite file with the standard library, as the subset of ``MlflowClient`` that
:class:`mlra.registry.Registry` calls, with MLflow's own semantics (deleted versions and runs left
out, the default workspace, runs newest first with MLflow's tie-break, a missing model raising an
error whose ``error_code`` is ``RESOURCE_DOES_NOT_EXIST``).

It is used only where nothing is written (a :class:`~mlra.registry.Registry` made with
``read_only=True``) and only on a schema it knows (:data:`KNOWN_SCHEMAS`, the alembic revision the
installed MLflow writes; a test fails when an MLflow upgrade changes it): any other store, an older
database (MLflow asks to upgrade it) or workspaces switched on is read through MLflow as before.
Nothing read here is trusted more than before: the trail verification, reconciliation and every
artifact check run on it exactly as on MLflow's answers.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlra.errors import MlraError

__all__ = ["KNOWN_SCHEMAS", "EmbeddedStore", "open_embedded"]

# alembic revisions of MLflow's database schema that this reader knows (MLflow 3.17.x)
KNOWN_SCHEMAS = frozenset({"dc11669786a5"})
_WORKSPACE = "default"  # MLflow's single-tenant workspace
_DELETED_VERSION = "Deleted_Internal"  # MLflow's current_stage of a deleted model version
_NAME_FILTER = re.compile(r"name = '((?:[^'\\]|\\.)*)'")
_NEWEST_FIRST = ["attributes.start_time DESC"]


class StoreReadError(MlraError):
    """A read the embedded store could not answer; ``error_code`` as MLflow would name it."""

    def __init__(self, message: str, error_code: str = "INTERNAL_ERROR") -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(frozen=True)
class RegisteredModelView:
    """The fields of MLflow's ``RegisteredModel`` that mlra reads."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)  # as MLflow gives them from SQLite


@dataclass(frozen=True)
class ModelVersionView:
    """The fields of MLflow's ``ModelVersion`` that mlra's reads use."""

    name: str
    version: int  # as MLflow gives it from SQLite
    source: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentView:
    experiment_id: str
    name: str


@dataclass(frozen=True)
class RunInfoView:
    run_id: str
    run_name: str | None
    status: str | None
    start_time: int | None


@dataclass(frozen=True)
class RunView:
    info: RunInfoView


def open_embedded(tracking_uri: str) -> EmbeddedStore | None:
    """An :class:`EmbeddedStore` on ``tracking_uri`` when it is an existing SQLite file of a
    known schema, in MLflow's single-tenant mode; None when MLflow must read it instead."""
    if not tracking_uri.startswith("sqlite:///") or "?" in tracking_uri:
        return None
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() in ("true", "1"):
        return None
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:  # unreadable: MLflow says what is wrong
        return None
    db.isolation_level = None  # each read sees the latest committed state and holds no lock
    try:
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:  # not a database, or not MLflow's: MLflow says what is wrong
        revision = []
    if len(revision) != 1 or revision[0][0] not in KNOWN_SCHEMAS:
        db.close()
        return None
    return EmbeddedStore(path, db)


class EmbeddedStore:
    """The reads of ``MlflowClient`` that :class:`~mlra.registry.Registry` makes, on one SQLite
    file (open it with :func:`open_embedded`)."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreReadError(f"cannot read the MLflow store {self.path}: {exc}") from exc

    def get_registered_model(self, name: str) -> RegisteredModelView:
        found = self._rows(
            "SELECT name FROM registered_models WHERE workspace = ? AND name = ?", _WORKSPACE, name
        )
        if not found:
            raise StoreReadError(
                f"Registered Model with name={name} not found", "RESOURCE_DOES_NOT_EXIST"
            )
        tags = self._rows(
            "SELECT key, value FROM registered_model_tags WHERE workspace = ? AND name = ?",
            _WORKSPACE,
            name,
        )
        aliases = self._rows(
            "SELECT alias, version FROM registered_model_aliases WHERE workspace = ? AND name = ?",
            _WORKSPACE,
            name,
        )
        return RegisteredModelView(name, dict(tags), dict(aliases))

    def search_model_versions(self, filter_string: str) -> list[ModelVersionView]:
        """Only the filter Registry uses, ``name = '<model>'`` (quotes escaped by a backslash)."""
        match = _NAME_FILTER.fullmatch(filter_string)
        if match is None:
            raise ValueError(f"the embedded store reads only `name = '…'`, got {filter_string!r}")
        name = re.sub(r"\\(.)", r"\1", match.group(1))
        rows = self._rows(
            "SELECT version FROM model_versions WHERE workspace = ? AND name = ? "
            "AND current_stage != ? ORDER BY version",
            _WORKSPACE,
            name,
            _DELETED_VERSION,
        )
        return [self.get_model_version(name, row[0]) for row in rows]

    def get_model_version(self, name: str, version: str | int) -> ModelVersionView:
        if not str(version).strip().isdigit():
            raise StoreReadError(
                f"Model version must be an integer, got {version!r}", "INVALID_PARAMETER_VALUE"
            )
        number = int(version)
        rows = self._rows(
            "SELECT source, run_id FROM model_versions WHERE workspace = ? AND name = ? "
            "AND version = ? AND current_stage != ?",
            _WORKSPACE,
            name,
            number,
            _DELETED_VERSION,
        )
        if not rows:
            raise StoreReadError(
                f"Model Version (name={name}, version={version}) not found",
                "RESOURCE_DOES_NOT_EXIST",
            )
        source, run_id = rows[0]
        tags = self._rows(
            "SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? "
            "AND version = ?",
            _WORKSPACE,
            name,
            number,
        )
        return ModelVersionView(name, number, source, run_id, dict(tags))

    def get_experiment_by_name(self, name: str) -> ExperimentView | None:
        rows = self._rows(
            "SELECT experiment_id FROM experiments WHERE workspace = ? AND name = ?",
            _WORKSPACE,
            name,
        )
        return ExperimentView(str(rows[0][0]), name) if rows else None

    def search_runs(
        self, experiment_ids: list[str], order_by: list[str], max_results: int
    ) -> list[RunView]:
        """Active runs of the experiments, newest first (MLflow: runs without a start time last,
        ties by run id) — the one ordering Registry asks for."""
        if order_by != _NEWEST_FIRST:
            raise ValueError(f"the embedded store orders runs only by {_NEWEST_FIRST}")
        marks = ",".join("?" * len(experiment_ids))
        rows = self._rows(
            "SELECT run_uuid, name, status, start_time FROM runs "
            f"WHERE experiment_id IN ({marks}) AND lifecycle_stage = 'active' "
            "ORDER BY start_time IS NULL, start_time DESC, run_uuid LIMIT ?",
            *[int(e) for e in experiment_ids],
            max_results,
        )
        return [RunView(RunInfoView(*row)) for row in rows]

    def close(self) -> None:
        self._db.close()
