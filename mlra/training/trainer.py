"""The Lightning Trainer from params.yaml's ``train`` section: accelerator, precision (checked
before anything starts), checkpoints, early stopping, a quiet single progress bar."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import lightning as L
import torch

from mlra.config import PRECISIONS, TrainParams
from mlra.errors import ConfigError
from mlra.training.data import TweetDataModule
from mlra.training.module import AdapterClassifier

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger


_CKPT_KEY: Final = "mlra"


def resolve_accelerator(accelerator: str) -> str:
    """``auto`` → ``cuda`` when a CUDA GPU is visible, else ``cpu``; other values unchanged."""
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu":
        return "cuda"
    return accelerator


def check_precision(precision: str, accelerator: str) -> None:
    """Refuse, before anything starts, a precision this machine cannot run.

    ``32-true`` runs anywhere; ``bf16-mixed`` on a CPU (slow where the CPU has no bf16 units, but
    correct) or a GPU with bf16 (Ampere or newer); ``16-mixed`` needs a CUDA GPU (fp16 autocast
    with a gradient scaler: Lightning and torch do not offer it on CPU).
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    where = resolve_accelerator(accelerator)
    if where == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.accelerator is {accelerator!r} but no CUDA GPU is visible; use 'auto' or 'cpu'"
        )
    if precision == "16-mixed" and where != "cuda":
        raise ConfigError(
            f"train.precision '16-mixed' needs a CUDA GPU, and this run is on {where!r}; "
            "use '32-true', or 'bf16-mixed' (slow on CPU)"
        )
    if precision == "bf16-mixed" and where == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "train.precision 'bf16-mixed' is not supported by this GPU "
            f"({torch.cuda.get_device_name()}); use '16-mixed' or '32-true'"
        )


def build_trainer(
    tp: TrainParams,
    *,
    checkpoint_dir: str | Path | None,
    logger: Logger | bool = False,
    progress_bar: bool = True,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    """A Trainer from the ``train`` section of params.yaml (see docs/training.md).

    DDP when ``devices`` > 1 (strategy ``auto`` becomes ``ddp``); batches are sharded by the data
    module's own sampler, so Lightning's distributed sampler is off. ``checkpoint_dir`` None: no
    checkpoints.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    check_precision(tp.precision, tp.accelerator)
    found: list[L.Callback] = [
        EarlyStopping(
            monitor=tp.early_stopping.monitor,
            mode=tp.early_stopping.mode,
            patience=tp.early_stopping.patience,
            min_delta=tp.early_stopping.min_delta,
            # judge after each validation only: a run that max_steps ends mid-epoch has none
            check_on_train_epoch_end=False,
        )
    ]
    if checkpoint_dir is not None:
        found.append(
            ModelCheckpoint(
                dirpath=str(checkpoint_dir),
                filename="step{step:06d}",
                every_n_train_steps=tp.checkpoint_every_steps,
                save_top_k=1,
                save_last=True,
                auto_insert_metric_name=False,
            )
        )
    if progress_bar:
        found.append(_StepProgressBar(leave=True))
    quiet_lightning()
    strategy = tp.strategy
    if strategy == "auto" and tp.devices > 1:
        strategy = "ddp"
    return L.Trainer(
        accelerator=resolve_accelerator(tp.accelerator),
        devices=tp.devices,
        strategy=strategy,
        precision=tp.precision,  # type: ignore[arg-type]
        max_epochs=tp.max_epochs,
        max_steps=tp.max_steps,
        accumulate_grad_batches=tp.accumulate_grad_batches,
        val_check_interval=tp.val_every_steps or None,
        check_val_every_n_epoch=None if tp.val_every_steps else 1,
        log_every_n_steps=tp.log_every_steps,
        deterministic=tp.deterministic,
        logger=logger,
        callbacks=[*found, *callbacks],
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        enable_checkpointing=checkpoint_dir is not None,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
    )


class _StepProgressBar(L.pytorch.callbacks.RichProgressBar):
    """Lightning's Rich bar, saying what a reader needs: ``epoch 1/2`` (not the 0-based ``Epoch
    0/1``), a total that stops at ``max_steps`` when that ends the run first, and the loss without
    Lightning's ``v_num``."""

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        total = trainer.num_training_batches
        if trainer.max_steps and trainer.max_steps > 0:
            left = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
            return min(total, left)
        return total

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        text = f"epoch {current_epoch + 1}" + (f"/{epochs}" if epochs and epochs > 0 else "")
        return f"{text:{len(self.validation_description)}}"  # padded: no flicker

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = dict(super().get_metrics(trainer, pl_module))
        items.pop("v_num", None)
        return items


def quiet_lightning() -> None:
    """Lightning's own lines once and only when they matter: no "GPU available", "TPU
    available", litlogger / litmodels tips or "`Trainer.fit` stopped" (INFO), and no second copy
    of each warning where the process logs through the root logger too (a Prefect run: Lightning's
    own handler and Prefect's console would print every line twice)."""
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if logging.getLogger().handlers:  # the root prints: Lightning's own handlers would repeat it
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True


def resumable_checkpoint(checkpoint_dir: str | Path, run_key: str) -> Path | None:
    """``last.ckpt`` in ``checkpoint_dir`` if it was written by a run with this ``run_key``
    (same parameters, same data); None when there is none or it belongs to another run."""
    path = Path(checkpoint_dir) / "last.ckpt"
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False).get(_CKPT_KEY, {})
    except Exception as exc:  # a file cut short by a kill mid-write: start again
        warnings.warn(f"ignoring the unreadable checkpoint {path}: {exc}", stacklevel=2)
        return None
    if saved.get("run_key") != run_key:
        warnings.warn(
            f"ignoring {path}: it was written with other parameters or data", stacklevel=2
        )
        return None
    return path


def fit(
    module: AdapterClassifier,
    data: TweetDataModule,
    tp: TrainParams,
    *,
    checkpoint_dir: str | Path | None,
    resume: str | Path | None = None,
    logger: Logger | bool = False,
    progress_bar: bool = True,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    """Train ``module`` on ``data`` (resuming from the checkpoint ``resume`` if given)."""
    trainer = build_trainer(
        tp,
        checkpoint_dir=checkpoint_dir,
        logger=logger,
        progress_bar=progress_bar,
        callbacks=callbacks,
    )
    with warnings.catch_warnings():
        # intended: the frozen base's dropout stays off (module docstring)
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        # single-process data loading is deliberate: tokenised rows are in memory already
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        # torch 2.13 deprecates an API Lightning 2.6 still calls: nothing for a user to do
        warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated.*")
        trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None)
    return trainer
