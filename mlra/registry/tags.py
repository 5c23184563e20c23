"""Every name mlra gives things in MLflow, in one place: tag names, aliases, artifact folders,
the default model and experiment names."""

from __future__ import annotations

from typing import Final

from mlra.candidate import ADAPTER_DIR  # the run's artifact folder a model version points at
from mlra.governance import CHALLENGER, CHAMPION

__all__ = [
    "ADAPTER_DIR",
    "CARD_FILE",
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_MODEL",
    "LAST_TAG",
    "LINEAGE_TAGS",
    "MAX_TEXT",
    "METRICS_FILE",
    "TRAIL_TAG",
]

DEFAULT_MODEL: Final = "mlra-sentiment"
DEFAULT_EXPERIMENT: Final = "mlra-retraining"
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
    "mlra.training_run_id": "the MLflow run that trained it (loss curves), or `none`",
    "mlra.audit.registration": "`seq:sha256` of its registration record in the audit trail",
}
TRAIL_TAG: Final = "mlra.audit.trail"  # on the registered model: where its trail lives
LAST_TAG: Final = "mlra.audit.last"  # on the registered model: the newest record it wrote
MAX_TEXT: Final = 2000  # longest name or reason accepted (stored whole in tags and records)
