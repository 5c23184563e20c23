"""The LightningModule: a frozen base with one mlra adapter and a head; only those train, and
its checkpoints hold nothing of the base model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Final

import lightning as L
import torch
from torch import nn

import mlra
from mlra.classifier import SentenceClassifier, frozen_prefix
from mlra.config import TrainParams
from mlra.errors import ConfigError
from mlra.metrics import scores
from mlra.training.cache import FrozenPrefixCache
from mlra.training.data import TweetDataModule

if TYPE_CHECKING:
    pass


_CKPT_KEY: Final = "mlra"


def _lr_lambda(schedule: str, warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return factor


class AdapterClassifier(L.LightningModule):
    """A :class:`SentenceClassifier` with adapter ``tp.adapter_name`` in its encoder.

    Only the adapter and ``model.head`` train (``mlra.mark_trainable``). Checkpoints hold exactly
    those tensors (plus optimiser, schedule and loop state); the frozen base is never written, and
    a checkpoint whose tensors are not exactly this module's trainable set is refused on load.
    Logged: ``train_loss`` per step; ``val_loss``, ``val_accuracy``, ``val_macro_f1`` per
    validation.
    """

    def __init__(
        self, model: SentenceClassifier, tp: TrainParams, labels: Sequence[str], run_key: str = ""
    ) -> None:
        super().__init__()
        self.model = model
        self.tp, self.labels, self.run_key = tp, tuple(labels), run_key
        self.targets = mlra.add_adapter(model, tp.adapter_name, tp.adapter)
        mlra.mark_trainable(model, tp.adapter_name, also=["head"])
        self.trainable_keys = frozenset(
            f"model.{name}" for name, p in model.named_parameters() if p.requires_grad
        )
        self.strict_loading = False  # checkpoints hold the trainable tensors only
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.caches: dict[str, FrozenPrefixCache] = {}  # "train"/"val" -> cache, during fit
        freeze_base_dropout(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return logits

    def logits(self, batch: Mapping[str, torch.Tensor], split: str = "train") -> torch.Tensor:
        """The model's logits for ``batch``; from the frozen-prefix cache of ``split`` when there is
        one (``train.cache_frozen``), which gives the same logits with fewer layers run."""
        cache = self.caches.get(split)
        if cache is None or "rows" not in batch:
            return self.forward(batch["input_ids"], batch["attention_mask"])
        mask = batch["attention_mask"]
        hidden = cache.gather(batch["rows"], mask)
        logits: torch.Tensor = self.model.head(self.model.embed_from(hidden, mask, cache.layers))
        return logits

    def build_caches(self, data: TweetDataModule) -> None:
        """Fill the frozen-prefix caches of ``data``'s train and val rows (see
        :class:`FrozenPrefixCache`); nothing when no leading layer is frozen and adapter-free."""
        self.caches = {}
        layers = frozen_prefix(self.model)
        if not self.tp.cache_frozen or layers == 0:
            return
        trainer = self._trainer
        context = trainer.precision_plugin.forward_context() if trainer else nullcontext()
        pad = int(data.tokenizer.pad_token_id or 0)
        with context:
            for split, rows in (("train", data.train_rows), ("val", data.val_rows)):
                if len(rows):
                    self.caches[split] = FrozenPrefixCache(
                        self.model, layers, rows.ids, pad_id=pad, device=self.device
                    )

    def on_fit_start(self) -> None:
        data = getattr(self.trainer, "datamodule", None)
        if isinstance(data, TweetDataModule):
            self.build_caches(data)

    def on_fit_end(self) -> None:
        self.caches = {}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.logits(batch, "train")
        loss = nn.functional.cross_entropy(logits.float(), batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.logits(batch, "val").float()
        loss = nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
        self._val.append((loss.detach().cpu(), logits.argmax(-1).cpu(), batch["labels"].cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        losses, preds, truth = (torch.cat(x) for x in zip(*self._val, strict=True))
        self._val.clear()
        s = scores(truth, preds, self.labels)
        # every rank validates every row: the values agree without a reduction
        self.log("val_loss", losses.mean(), prog_bar=False)
        self.log("val_accuracy", s.accuracy)
        self.log("val_macro_f1", s.macro_f1, prog_bar=True)

    def configure_optimizers(self) -> Any:
        tp = self.tp
        adapter = mlra.adapter_parameters(self.model, tp.adapter_name)
        head = list(self.model.head.parameters())
        optimiser = torch.optim.AdamW(
            [{"params": adapter, "lr": tp.lr}, {"params": head, "lr": tp.head_lr}],
            weight_decay=tp.weight_decay,
        )
        total = self._total_steps()
        warmup = max(1, round(tp.warmup_share * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, _lr_lambda(tp.schedule, warmup, total)
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _total_steps(self) -> int:
        """Optimiser steps of the whole run, for the LR schedule.

        Computed from the data module, not ``trainer.estimated_stepping_batches``: that loads the
        train dataloader before a checkpoint is restored, and Lightning then never hands the
        loader its saved position (the resumed run would restart the epoch).
        """
        tp, trainer = self.tp, self.trainer
        data = getattr(trainer, "datamodule")  # noqa: B009 - untyped in Lightning
        assert isinstance(data, TweetDataModule)
        batches = math.ceil(len(data.train_rows) / tp.batch_size) // trainer.world_size
        if trainer.limit_train_batches is not None and isinstance(trainer.limit_train_batches, int):
            batches = min(batches, trainer.limit_train_batches)
        per_epoch = max(1, math.ceil(batches / tp.accumulate_grad_batches))
        total = per_epoch * tp.max_epochs
        return min(total, tp.max_steps) if tp.max_steps > 0 else total

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in self.trainable_keys}
        checkpoint[_CKPT_KEY] = {"run_key": self.run_key, "adapter": self.tp.adapter_name}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keys = set(checkpoint.get("state_dict", {}))
        if keys != self.trainable_keys:
            missing = sorted(self.trainable_keys - keys)[:3]
            extra = sorted(keys - self.trainable_keys)[:3]
            raise ConfigError(
                "the checkpoint does not hold this model's adapter and head "
                f"(missing {missing}, unexpected {extra}): it is from another configuration"
            )


def freeze_base_dropout(model: nn.Module) -> None:
    """Put every dropout layer of ``model`` except the adapters' own in eval mode (see above)."""
    adapter_dropouts = {
        id(m)
        for layer in model.modules()
        if isinstance(layer, mlra.AdapterLayer)
        for m in layer.lora_dropout.modules()
    }
    for module in model.modules():
        if isinstance(module, nn.Dropout) and id(module) not in adapter_dropouts:
            module.eval()
