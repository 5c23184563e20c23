"""A params.yaml for a tiny but real retrain: the packaged MiniLM trained for a few steps, small
golden slices, gates that let any version through unless a test tightens them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

SMALL: dict[str, dict[str, Any]] = {
    "feedback": {"rows_per_batch": 120},
    "train": {
        "rows_per_domain": 8,
        "val_rows_per_domain": 4,
        "source_rows": 40,
        "batch_size": 8,
        "max_length": 32,
        "max_epochs": 1,
        "max_steps": 2,
        "checkpoint_every_steps": 1000,
        "log_every_steps": 1,
        "deterministic": False,
    },
    "evaluate": {"max_rows_per_slice": 10, "batch_size": 64},
    "promotion": {
        "min_overall_gain": -1.0,
        "max_slice_regression": 1.0,
        "min_slice_support": 1000,
        "approval": "first-automatic",
    },
    "pipeline": {"approval_timeout_s": 0, "retries": 2, "retry_delay_s": 1.0},
}


def small_params(root: Path, **overrides: dict[str, Any]) -> Path:
    """Write the repository's params.yaml with :data:`SMALL` (and ``overrides``, section by
    section) applied into ``root``; return its path. Folders in it are relative: run from
    ``root``."""
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for section, values in [*SMALL.items(), *overrides.items()]:
        data[section] = {**data[section], **values}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
