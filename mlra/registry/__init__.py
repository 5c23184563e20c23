"""The model registry: MLflow runs, adapter model versions, lineage tags, aliases, model cards.

- :mod:`mlra.registry.store`: :class:`Registry` — one registered model in one MLflow store, with
  the audit trail its decisions go to (registration, the trail's state, reconciliation, fetching
  and verifying artifacts).
- :mod:`mlra.registry.card`: the model card (a version's description).
- :mod:`mlra.registry.tags`: every name mlra gives things in MLflow.

The evaluation metrics' schema lives in :mod:`mlra.metrics`, the datasets' lineage in
:mod:`mlra.lineage`; both are re-exported here for callers of the registry.
"""

from __future__ import annotations

from mlra.lineage import DatasetRef, dataset_ref, git_commit, params_hash
from mlra.metrics import EvaluationMetrics, SliceScores
from mlra.registry.card import DEFAULT_INTENDED_USE, DEFAULT_LIMITATIONS, render_card
from mlra.registry.store import (
    Fetched,
    Registry,
    audit_anchors,
    load_params_dict,
    registry_params,
    store_findings,
)
from mlra.registry.tags import (
    ADAPTER_DIR,
    CARD_FILE,
    CHALLENGER,
    CHAMPION,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL,
    LAST_TAG,
    LINEAGE_TAGS,
    MAX_TEXT,
    METRICS_FILE,
    TRAIL_TAG,
)

__all__ = [
    "ADAPTER_DIR",
    "CARD_FILE",
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_INTENDED_USE",
    "DEFAULT_LIMITATIONS",
    "DEFAULT_MODEL",
    "LAST_TAG",
    "LINEAGE_TAGS",
    "MAX_TEXT",
    "METRICS_FILE",
    "TRAIL_TAG",
    "DatasetRef",
    "EvaluationMetrics",
    "Fetched",
    "Registry",
    "SliceScores",
    "audit_anchors",
    "dataset_ref",
    "git_commit",
    "load_params_dict",
    "params_hash",
    "registry_params",
    "render_card",
    "store_findings",
]
