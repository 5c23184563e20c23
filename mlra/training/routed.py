"""The routed LightningModule of the modular pass: several modules (an adapter and a head each)
on one frozen base, trained together, each row through its own module."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

import mlra
from mlra.classifier import SentenceClassifier
from mlra.config import TrainParams
from mlra.errors import ConfigError
from mlra.metrics import scores
from mlra.spec import AdapterSpec
from mlra.training.cache import FrozenPrefixCache
from mlra.training.data import TweetDataModule
from mlra.training.module import _CKPT_KEY, AdapterClassifier, _lr_lambda, freeze_base_dropout

__all__ = ["ModularClassifier", "ModularDataModule"]


class ModularDataModule(TweetDataModule):
    """A :class:`TweetDataModule` that also knows each row's module (an index into the module
    names): ``train_modules[i]`` is the module of ``train_rows[i]``, likewise for validation."""

    def __init__(
        self,
        tokenizer: Any,
        train: tuple[Sequence[str], Sequence[int], Sequence[int]],
        val: tuple[Sequence[str], Sequence[int], Sequence[int]],
        *,
        batch_size: int,
        max_length: int,
        seed: int,
    ) -> None:
        # validation rows handed over already in the order TweetDataModule puts them (by text
        # length, stable), so its own sort keeps them where their module indices are
        order = sorted(range(len(val[0])), key=lambda i: len(val[0][i]))
        texts = [val[0][i] for i in order]
        labels = [val[1][i] for i in order]
        modules = [val[2][i] for i in order]
        super().__init__(tokenizer, (train[0], train[1]), (texts, labels),
                         batch_size=batch_size, max_length=max_length, seed=seed)  # fmt: skip
        self.train_modules = torch.tensor(list(train[2]), dtype=torch.long)
        self.val_modules = torch.tensor(list(modules), dtype=torch.long)


class ModularClassifier(AdapterClassifier):
    """A :class:`SentenceClassifier` with one adapter per module (named after it) and one head
    per module (each a copy of the model's head, the base head, which stays frozen).

    Each row of a batch goes through its module's adapter (``mlra.route``) and its module's head
    (the stacked heads gathered by row: no loop over rows). The frozen-prefix cache, the
    checkpoints (the trainable tensors only: every module's adapter and head), the schedule and
    the refusal of a foreign checkpoint are :class:`AdapterClassifier`'s. With ``pool_layer``
    equal to the cache's layers, :attr:`prefix_pooled` keeps the training rows' cached hidden
    states mean-pooled (the router's features: :func:`mlra.router.pooled_after`), ``[rows,
    hidden]`` float32 on the CPU, in the data module's row order. Logged per validation:
    ``val_loss``, ``val_accuracy`` over all rows, ``val_macro_f1_<module>`` and
    ``val_accuracy_<module>``, and ``val_macro_f1``: the mean of the modules' macro-F1.
    """

    def __init__(
        self,
        model: SentenceClassifier,
        tp: TrainParams,
        specs: Mapping[str, AdapterSpec],
        labels: Sequence[str],
        run_key: str = "",
        *,
        pool_layer: int | None = None,
    ) -> None:
        L.LightningModule.__init__(self)  # not AdapterClassifier's: it adds a single adapter
        if not specs:
            raise ConfigError("a modular model needs at least one module, got none")
        self.model, self.tp, self.labels, self.run_key = model, tp, tuple(labels), run_key
        self.names = tuple(specs)
        self.module_targets = {n: mlra.add_adapter(model, n, s) for n, s in specs.items()}
        self.targets = sorted({t for names in self.module_targets.values() for t in names})
        mlra.mark_trainable(model, list(self.names))  # the base head (model.head) stays frozen
        self.heads = nn.ModuleDict(
            {n: copy.deepcopy(model.head).requires_grad_(True) for n in self.names}
        )
        self.trainable_keys = frozenset(n for n, p in self.named_parameters() if p.requires_grad)
        self.strict_loading = False
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._val_modules: list[torch.Tensor] = []
        self.caches = {}
        self.row_modules: dict[str, torch.Tensor] = {}  # "train"/"val" -> module per row
        self.pool_layer = pool_layer
        self.prefix_pooled: torch.Tensor | None = None
        freeze_base_dropout(model)

    def head_logits(self, pooled: torch.Tensor, modules: torch.Tensor) -> torch.Tensor:
        """Row ``i``'s logits from the head of module ``modules[i]``: ``[rows, hidden]`` ->
        ``[rows, labels]``."""
        heads = [self.module_head(n, detached=False) for n in self.names]
        weight = torch.stack([h.weight for h in heads])  # [modules, labels, hidden]
        bias = torch.stack([h.bias for h in heads])  # [modules, labels]
        modules = modules.to(weight.device)
        x = pooled.unsqueeze(-1).to(weight.dtype)  # [rows, hidden, 1]
        return torch.bmm(weight[modules], x).squeeze(-1) + bias[modules]  # [rows, labels]

    def routed_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        modules: torch.Tensor,
        hidden: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """Logits with row ``i`` through module ``self.names[modules[i]]``; ``hidden``: the
        frozen prefix's output and its layer count, when cached (only the layers above run)."""
        names = [self.names[k] for k in modules.tolist()]
        with mlra.route(self.model, names):
            if hidden is None:
                pooled = self.model.embed(input_ids, attention_mask)
            else:
                pooled = self.model.embed_from(hidden[0], attention_mask, hidden[1])
        return self.head_logits(pooled, modules)

    def modules_of(self, batch: Mapping[str, torch.Tensor], split: str) -> torch.Tensor:
        """The module index of each row of ``batch`` (its ``modules``, else by its ``rows``)."""
        if "modules" in batch:
            return batch["modules"].cpu()
        table = self.row_modules.get(split)
        if table is None or "rows" not in batch:
            raise ConfigError("a modular batch needs its rows' modules (a ModularDataModule)")
        return table[batch["rows"].cpu()]

    def logits(self, batch: Mapping[str, torch.Tensor], split: str = "train") -> torch.Tensor:
        modules = self.modules_of(batch, split)
        cache = self.caches.get(split)
        mask = batch["attention_mask"]
        hidden = None
        if cache is not None and "rows" in batch:
            hidden = (cache.gather(batch["rows"], mask), cache.layers)
        return self.routed_logits(batch["input_ids"], mask, modules, hidden)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # the frozen-prefix caches
        data = getattr(self.trainer, "datamodule", None)
        if isinstance(data, ModularDataModule):
            self.row_modules = {"train": data.train_modules, "val": data.val_modules}
        cache = self.caches.get("train")
        if cache is not None and cache.layers == self.pool_layer:
            self.prefix_pooled = _mean_per_row(cache)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.logits(batch, "val").float()
        loss = nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
        self._val.append((loss.detach().cpu(), logits.argmax(-1).cpu(), batch["labels"].cpu()))
        self._val_modules.append(self.modules_of(batch, "val"))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        losses, preds, truth = (torch.cat(x) for x in zip(*self._val, strict=True))
        modules = torch.cat(self._val_modules)
        self._val.clear()
        self._val_modules.clear()
        f1s = []
        for k, name in enumerate(self.names):
            mine = modules == k
            if bool(mine.any()):
                s = scores(truth[mine], preds[mine], self.labels)
                self.log(f"val_macro_f1_{name}", s.macro_f1)
                self.log(f"val_accuracy_{name}", s.accuracy)
                f1s.append(s.macro_f1)
        # every rank validates every row: the values agree without a reduction
        self.log("val_loss", losses.mean())
        self.log("val_accuracy", (preds == truth).float().mean())
        self.log("val_macro_f1", sum(f1s) / len(f1s), prog_bar=True)

    def configure_optimizers(self) -> Any:
        tp = self.tp
        adapters = [p for n in self.names for p in mlra.adapter_parameters(self.model, n)]
        optimiser = torch.optim.AdamW(
            [{"params": adapters, "lr": tp.lr},
             {"params": list(self.heads.parameters()), "lr": tp.head_lr}],
            weight_decay=tp.weight_decay,
        )  # fmt: skip
        total = self._total_steps()
        warmup = max(1, round(tp.warmup_share * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, _lr_lambda(tp.schedule, warmup, total)
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in self.trainable_keys}
        checkpoint[_CKPT_KEY] = {"run_key": self.run_key, "modules": list(self.names)}

    def module_head(self, name: str, *, detached: bool = True) -> nn.Linear:
        """Module ``name``'s head: a detached copy (what its candidate folder saves), or with
        ``detached=False`` the trained layer itself."""
        head = self.heads[name]
        assert isinstance(head, nn.Linear)
        return copy.deepcopy(head).requires_grad_(False) if detached else head


def _mean_per_row(cache: FrozenPrefixCache) -> torch.Tensor:
    """The mean over each row's tokens of the cached hidden states, ``[rows, hidden]`` (float32,
    CPU): what :func:`mlra.router.pooled_after` gives at the cache's layer."""
    lengths, flat = cache.lengths, cache.flat.float()
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=flat.device), lengths)
    sums = flat.new_zeros(len(lengths), flat.shape[-1]).index_add_(0, owner, flat)
    return (sums / lengths.clamp(min=1).unsqueeze(1).to(flat)).cpu()  # [rows, hidden]
