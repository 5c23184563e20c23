"""Prefect flows of the mlra pipeline: thin wiring over mlra functions (../DESIGN.md's flow).

- ``mlra-retrain`` (:func:`flows.retrain.retrain`): ingest → prepare → validate → train →
  evaluate → register → gate → approval → promote; ``mlra run`` runs it once.
- ``mlra-retrain-if-due`` (:func:`flows.manage.retrain_if_due`): what ``mlra schedule`` serves on
  params.yaml's cron; retrains when enough new feedback arrived.
- ``mlra-promote`` / ``mlra-rollback``: for manual use (also deployments in ``prefect.yaml``).
"""

import os
from pathlib import Path

from mlra._env import apply_runtime_defaults

# before Prefect reads its settings: PREFECT_HOME in the project, no telemetry
apply_runtime_defaults()
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect makes no parents

from flows.manage import promote_flow, retrain_if_due, rollback_flow  # noqa: E402
from flows.retrain import retrain  # noqa: E402

__all__ = ["promote_flow", "retrain", "retrain_if_due", "rollback_flow"]
