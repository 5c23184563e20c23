"""Process-wide defaults that keep mlra offline, quiet and inside the project folder.

Set only where the user has not set them: a user's own environment always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

_DEFAULTS = {
    # Never reach a model hub: the base model comes from an installed package.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # No telemetry, no analytics daemons (they try the network and stall).
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "false",
    # MLflow's INFO lines ("Creating initial MLflow database tables...") are not for users
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def project_dir() -> Path:
    """The folder that holds mlra's local state: ``$MLRA_HOME`` or ``./.mlra``."""
    return Path(os.environ.get("MLRA_HOME", ".mlra")).resolve()


def apply_runtime_defaults() -> None:
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MPLCONFIGDIR", str(project_dir() / "matplotlib"))
    # Prefect's own state (its temporary server's database, logs) stays in the project too
    os.environ.setdefault("PREFECT_HOME", str(project_dir() / "prefect"))


def tracking_uri() -> str:
    """Where MLflow runs and the model registry live: ``$MLFLOW_TRACKING_URI``, else a SQLite
    file in the project (``sqlite:///<project>/mlruns.db``), artifacts in :func:`artifact_root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_dir() / 'mlruns.db'}"


def artifact_root() -> Path:
    """The folder for MLflow artifacts of experiments mlra creates: ``<project>/mlartifacts``."""
    return project_dir() / "mlartifacts"
