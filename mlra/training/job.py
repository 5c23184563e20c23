"""The ``mlra train`` job: the no-adaptation base head, then the adapter trained on the target
domains, saved as the candidate folder (:mod:`mlra.candidate`) with its lineage."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import nn

import mlra
from mlra._hashing import canonical_json, sha256_hex
from mlra.candidate import ADAPTER_DIR
from mlra.classifier import SentenceClassifier, embed_texts, fit_head
from mlra.config import DataParams, TrainParams
from mlra.lineage import data_hash, dvc_md5, git_commit, library_versions, params_hash, plain
from mlra.training.data import load_training_data, make_datamodule
from mlra.training.module import AdapterClassifier
from mlra.training.trainer import check_precision, fit, resumable_checkpoint

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger


def lineage_metadata(
    data: DataParams, tp: TrainParams, prepared_dir: str | Path | None = None
) -> dict[str, Any]:
    """What a trained adapter came from: params hash, data hash (+ DVC md5), git commit, seed,
    library versions."""
    folder = prepared_dir or data.prepared_dir
    commit = git_commit()
    return {
        "params_hash": params_hash({"data": data, "train": tp}),
        "data_hash": data_hash(folder),
        "dvc_data_md5": dvc_md5(folder),
        "git_commit": commit.removesuffix("-dirty"),
        "git_dirty": None if commit == "unknown" else commit.endswith("-dirty"),
        "seed": tp.seed,
        "versions": library_versions(),
    }


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    adapter_dir: Path
    adapter_sha256: str
    metadata: dict[str, Any]
    seconds: dict[str, float]
    resumed_from: str | None
    mlflow_run_id: str | None


def save_candidate(
    module: AdapterClassifier,
    base_head: nn.Linear,
    out_dir: str | Path,
    metadata: Mapping[str, Any],
) -> mlra.artifact.Manifest:
    """Write the candidate folder (:func:`mlra.candidate.save`) of a trained module."""
    from mlra import candidate

    return candidate.save(
        module.model, module.tp.adapter_name, module.labels, base_head, out_dir, metadata
    )


def _mlflow_logger(tp: TrainParams, tags: Mapping[str, Any]) -> Logger:
    from lightning.pytorch.loggers import MLFlowLogger

    from mlra._env import artifact_root, tracking_uri

    # a tracking server decides where artifacts go; the embedded SQLite store uses the project's
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    from mlflow import MlflowClient

    from mlra.tracking import ensure_experiment

    location = artifact_root().as_uri() if local else None
    ensure_experiment(MlflowClient(tracking_uri=tracking_uri()), tp.experiment, location)
    return MLFlowLogger(
        experiment_name=tp.experiment,
        tracking_uri=tracking_uri(),
        artifact_location=artifact_root().as_uri() if local else None,
        run_name=f"train-{tp.adapter_name}",
        tags={k: str(v) for k, v in tags.items()},
    )


def train(
    data_params: DataParams,
    tp: TrainParams,
    *,
    prepared_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    log_mlflow: bool = True,
    progress_bar: bool = True,
) -> TrainResult:
    """The ``mlra train`` job; see the module docstring and docs/training.md.

    ``resume``: continue from ``train.checkpoint_dir/last.ckpt`` when a run with the same
    parameters and data was interrupted there. Checkpoints are removed after a finished run.
    """
    from mlra.base_model import load_base_model
    from mlra.data import LABELS

    check_precision(tp.precision, tp.accelerator)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    folder = Path(prepared_dir or data_params.prepared_dir)
    data = load_training_data(data_params, tp, folder)
    lineage = lineage_metadata(data_params, tp, folder)
    run_key = sha256_hex(canonical_json([lineage["params_hash"], lineage["data_hash"]]))
    L.seed_everything(tp.seed, workers=True, verbose=False)

    encoder, tokenizer = load_base_model()
    model = SentenceClassifier(encoder, len(LABELS), pooling=tp.pooling)
    features = embed_texts(model, tokenizer, data.source_texts, max_length=tp.max_length)
    torch.manual_seed(tp.seed)
    fit_head(model.head, features, torch.tensor(data.source_labels))
    base_head = copy.deepcopy(model.head).requires_grad_(False)
    seconds["base_head"] = time.perf_counter() - clock

    clock = time.perf_counter()
    L.seed_everything(tp.seed, workers=True, verbose=False)
    module = AdapterClassifier(model, tp, LABELS, run_key=run_key)
    datamodule = make_datamodule(tokenizer, data, tp)
    checkpoint_dir = Path(tp.checkpoint_dir)
    ckpt = resumable_checkpoint(checkpoint_dir, run_key) if resume else None
    tags = {k: v for k, v in lineage.items() if k != "versions"} | {"stage": "train"}
    logger: Logger | bool = _mlflow_logger(tp, tags) if log_mlflow else False
    trainer = fit(
        module,
        datamodule,
        tp,
        checkpoint_dir=checkpoint_dir,
        resume=ckpt,
        logger=logger,
        progress_bar=progress_bar,
    )
    seconds["train"] = time.perf_counter() - clock

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metadata = {
        **lineage,
        "params": {"data": plain(data_params), "train": plain(tp)},
        "rows": {"train": len(data.train_texts), "val": len(data.val_texts),
                 "source": len(data.source_texts), "train_by_domain": data.rows_by_domain},
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "val_metrics": metrics,
        "resumed_from": str(ckpt) if ckpt else None,
        "source_domain": data_params.source_domain,
        "target_domains": list(data_params.target_domains),
    }  # fmt: skip
    run_id = getattr(logger, "run_id", None) if logger else None
    if run_id:
        metadata["mlflow_run_id"] = run_id
    out = Path(out_dir or tp.out_dir)
    if not trainer.is_global_zero:  # DDP: rank 0 writes the artifact
        return TrainResult(out, out / ADAPTER_DIR, "", metadata, seconds, None, run_id)
    manifest = save_candidate(module, base_head, out, metadata)
    if isinstance(logger, L.pytorch.loggers.MLFlowLogger):
        logger.experiment.log_dict(run_id, manifest.to_dict(), "adapter_manifest.json")
    _remove_checkpoints(checkpoint_dir)
    return TrainResult(
        out_dir=out,
        adapter_dir=out / ADAPTER_DIR,
        adapter_sha256=manifest.sha256,
        metadata=metadata,
        seconds=seconds,
        resumed_from=str(ckpt) if ckpt else None,
        mlflow_run_id=run_id,
    )


def _remove_checkpoints(folder: Path) -> None:
    """Checkpoints exist to survive a crash; a finished run leaves none (they would be resumed)."""
    if folder.is_dir():
        for path in folder.glob("*.ckpt"):
            path.unlink(missing_ok=True)
