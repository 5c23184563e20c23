"""Training with Lightning: a frozen base, one mlra adapter and a classification head.

The pieces, each usable alone (tests build them on a tiny random BERT):

- :class:`AdapterClassifier` — the LightningModule. It wraps a :class:`SentenceClassifier`, adds one
  adapter to its encoder and trains only that adapter and the head. Its checkpoints hold those
  tensors and nothing of the base model.
- :class:`TweetDataModule` — tokenises once, batches with dynamic padding (texts of similar
  length share a batch), shards batches across DDP ranks, and can resume mid-epoch: its batch
  sampler's position is saved in every checkpoint.
- :func:`check_precision`, :func:`build_trainer` — the Trainer from ``params.yaml``'s ``train``
  section; a precision the hardware cannot run is a :class:`ConfigError` before anything starts.
- :func:`train` — the ``mlra train`` job: the no-adaptation base (frozen MiniLM + a head fitted
  on source-domain rows), then the adapter trained on the target domains, saved as an adapter
  artifact with lineage metadata beside the base head.

Why the base dropout is off while training: the base is frozen, so with its dropout layers in eval
mode it computes exactly the function that evaluation and serving use, and a run consumes no
random numbers except the adapter's own dropout (0 by default). That is what makes a resumed run
end bit-for-bit where the uninterrupted one does.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

import mlra
from mlra._hashing import canonical_json, sha256_hex
from mlra.classifier import SentenceClassifier, embed_texts, fit_head, frozen_prefix
from mlra.config import PRECISIONS, DataParams, EarlyStoppingParams, TrainParams
from mlra.data.splits import cap_per_domain
from mlra.errors import ConfigError, DataError
from mlra.lineage import data_hash, dvc_md5, git_commit, library_versions, params_hash, plain
from mlra.metrics import scores

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "ADAPTER_DIR",
    "BASE_HEAD_FILE",
    "PRECISIONS",
    "AdapterClassifier",
    "EarlyStoppingParams",
    "FrozenPrefixCache",
    "TrainParams",
    "TrainResult",
    "TrainingData",
    "TweetDataModule",
    "build_trainer",
    "check_precision",
    "fit",
    "lineage_metadata",
    "load_training_data",
    "make_datamodule",
    "save_candidate",
    "train",
]

BASE_HEAD_FILE: Final = "base_head.safetensors"
ADAPTER_DIR: Final = "adapter"
_CKPT_KEY: Final = "mlra"


# -- data -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Texts and label indices for the three uses of training data."""

    train_texts: list[str]  # target domains + feedback (+ source replay): what the adapter learns
    train_labels: list[int]
    val_texts: list[str]  # target-domain validation rows: early stopping and checkpoints
    val_labels: list[int]
    source_texts: list[str]  # source-domain rows the base head is fitted on
    source_labels: list[int]
    rows_by_domain: dict[str, int]  # training rows per domain (after the caps)


def make_datamodule(tokenizer: Any, data: TrainingData, tp: TrainParams) -> TweetDataModule:
    """The DataModule over ``data``'s train/val rows, sized by ``tp``."""
    return TweetDataModule(
        tokenizer,
        (data.train_texts, data.train_labels),
        (data.val_texts, data.val_labels),
        batch_size=tp.batch_size,
        max_length=tp.max_length,
        seed=tp.seed,
    )


def load_training_data(
    data: DataParams,
    tp: TrainParams,
    prepared_dir: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> TrainingData:
    """The rows ``mlra train`` uses, from the prepared splits (``mlra prepare``).

    Training rows: target-domain rows of the train split plus every accepted feedback row there
    (``prepare`` has already put feedback into the splits), at most ``train.rows_per_domain`` per
    domain, plus ``train.replay_rows`` source-domain rows (rehearsal, against forgetting).
    Validation: target-domain rows of the val split, ``train.val_rows_per_domain`` each.
    Source: ``train.source_rows`` source-domain train rows, for the base head. Golden rows are
    never read here.
    """
    from mlra.data import LABELS
    from mlra.data.splits import load_split

    labels = tuple(labels or LABELS)
    folder = Path(prepared_dir or data.prepared_dir)
    targets = set(data.target_domains)
    train = load_split(folder, "train")
    val = load_split(folder, "val")
    index = {label: k for k, label in enumerate(labels)}
    unknown = sorted(set(train["label"]) - set(index))
    if unknown:
        raise DataError(f"{folder}/train.parquet has labels {unknown} outside {list(labels)}")

    adapt = train[train["domain"].isin(targets) | (train["origin"] == "feedback")]
    adapt = cap_per_domain(adapt, tp.rows_per_domain)
    if tp.replay_rows:  # rehearsal: the source domain keeps a voice while the head moves
        import pandas as pd

        replay = cap_per_domain(train[train["domain"] == data.source_domain], tp.replay_rows)
        adapt = pd.concat([adapt, replay], ignore_index=True)
    val = cap_per_domain(val[val["domain"].isin(targets)], tp.val_rows_per_domain)
    source = train[train["domain"] == data.source_domain]
    source = cap_per_domain(source, tp.source_rows)
    for name, frame in (("training", adapt), ("validation", val), ("source-domain", source)):
        if frame.empty:
            raise DataError(f"no {name} rows in {folder}: run `mlra prepare` first")
    return TrainingData(
        train_texts=list(adapt["text"]),
        train_labels=[index[x] for x in adapt["label"]],
        val_texts=list(val["text"]),
        val_labels=[index[x] for x in val["label"]],
        source_texts=list(source["text"]),
        source_labels=[index[x] for x in source["label"]],
        rows_by_domain={str(k): int(v) for k, v in adapt["domain"].value_counts().items()},
    )


class _Encoded(Dataset[tuple[int, list[int], int]]):
    """Row index, token ids (unpadded) and label per row (the index keys the prefix cache)."""

    def __init__(self, ids: list[list[int]], labels: Sequence[int]) -> None:
        self.ids, self.labels = ids, list(labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[int, list[int], int]:
        return i, self.ids[i], self.labels[i]


class _Collate:
    """Pads a batch to its own longest row (dynamic padding). A class, so DDP can pickle it."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[tuple[int, list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for _, ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (_, ids, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        labels = torch.tensor([label for _, _, label in rows])
        index = torch.tensor([row for row, _, _ in rows])
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "rows": index}


class FrozenPrefixCache:
    """The hidden states after the first ``layers`` encoder layers, computed once per row.

    When an adapter sits only in upper layers, the layers below it are frozen and compute the same
    function every epoch (:func:`mlra.classifier.frozen_prefix` says how many). Their output is
    computed here once, without autograd, every row at its own length (no padding stored), and
    each training step then runs only the layers from ``layers`` up. Rows are computed in a fixed
    order (by length, in batches of ``batch_size``), independent of the training sampler, so a
    resumed run rebuilds exactly the same cache.
    """

    def __init__(
        self,
        model: SentenceClassifier,
        layers: int,
        ids: Sequence[Sequence[int]],
        *,
        pad_id: int,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        self.layers = layers
        lengths = [len(row) for row in ids]
        self.lengths = torch.tensor(lengths, dtype=torch.long, device=device)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths  # first token of each row
        parts: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        order = sorted(range(len(ids)), key=lambda i: lengths[i])
        collate = _Collate(pad_id)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                pick = order[start : start + batch_size]
                batch = collate([(i, list(ids[i]), 0) for i in pick])
                mask = batch["attention_mask"].to(device)
                hidden = model.hidden_after(batch["input_ids"].to(device), mask, layers)
                for k, i in enumerate(pick):
                    parts[i] = hidden[k, : lengths[i]]
        self.flat = torch.cat(parts) if parts else torch.empty(0)  # [all tokens, hidden]

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def gather(self, rows: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The cached hidden states of ``rows``, padded like ``attention_mask`` (zeros where it is
        0: padded positions never reach a valid one, as attention and pooling mask them out)."""
        rows = rows.to(self.lengths.device)
        lengths = self.lengths[rows]  # [batch]
        width = attention_mask.shape[1]
        pos = torch.arange(width, device=rows.device)  # [width]
        valid = pos.unsqueeze(0) < lengths.unsqueeze(1)  # [batch, width]
        source = (self.offsets[rows].unsqueeze(1) + pos.unsqueeze(0))[valid]  # [valid tokens]
        out = self.flat.new_zeros(len(rows), width, self.flat.shape[-1])
        out[valid] = self.flat[source]
        return out


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of rows of similar length, sharded across ranks, resumable mid-epoch.

    Each epoch: a permutation seeded by ``(seed, epoch)``, cut into chunks of ``bucket`` batches,
    each chunk sorted by length and cut into batches, the batches shuffled again. Rank ``r`` of
    ``world`` takes batches ``r, r + world, ...`` (all ranks get the same count). The position in
    the epoch is part of :meth:`state_dict`, which Lightning stores in each checkpoint, so a
    resumed run continues with the very next batch the interrupted one would have drawn.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        *,
        bucket: int = 50,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.bucket, self.rank, self.world = bucket, rank, world
        self.epoch = 0
        self._skip = 0  # batches of this epoch already consumed before a restart
        self._yielded = 0

    @property
    def sampler(self) -> BucketBatchSampler:
        """Itself: Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler``."""
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = epoch, 0

    def _all_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        chunk = self.batch_size * self.bucket
        out: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: self.lengths[i])
            out += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        shuffle = torch.randperm(len(out), generator=g).tolist()
        return [out[i] for i in shuffle]

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size) // self.world

    def __iter__(self) -> Iterator[list[int]]:
        mine = self._all_batches()[self.rank :: self.world][: len(self)]
        skip, self._skip = self._skip, 0
        self._yielded = skip
        for batch in mine[skip:]:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self._yielded}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self._skip = int(state["epoch"]), int(state["consumed"])


class _ResumableLoader(DataLoader[Any]):
    """A DataLoader whose position Lightning saves and restores (its ``_Stateful`` protocol)."""

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        assert isinstance(sampler, BucketBatchSampler)
        return sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        sampler = self.batch_sampler
        assert isinstance(sampler, BucketBatchSampler)
        sampler.load_state_dict(state)


class TweetDataModule(L.LightningDataModule):
    """Training and validation batches from texts and labels, with the given tokenizer.

    Texts are tokenised once (truncated to ``max_length``); each batch is padded to its own longest
    row. Training batches come from a :class:`BucketBatchSampler` (length buckets, DDP shards,
    mid-epoch resume); validation runs every row on every rank, in length order.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train: tuple[Sequence[str], Sequence[int]],
        val: tuple[Sequence[str], Sequence[int]],
        *,
        batch_size: int,
        max_length: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length
        self.seed = seed
        self.train_rows = _Encoded(self._ids(train[0]), train[1])
        order = sorted(range(len(val[0])), key=lambda i: len(val[0][i]))
        self.val_rows = _Encoded(self._ids([val[0][i] for i in order]), [val[1][i] for i in order])
        self.collate = _Collate(int(tokenizer.pad_token_id or 0))

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [list(ids) for ids in encoded["input_ids"]]

    def train_dataloader(self) -> DataLoader[Any]:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if len(self.train_rows) < self.batch_size * world:
            raise DataError(
                f"{len(self.train_rows)} training rows are fewer than one batch per device "
                f"(batch_size {self.batch_size} × {world} devices)"
            )
        sampler = BucketBatchSampler(
            [len(ids) for ids in self.train_rows.ids],
            self.batch_size,
            self.seed,
            rank=rank,
            world=world,
        )
        return _ResumableLoader(self.train_rows, batch_sampler=sampler, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_rows, batch_size=64, shuffle=False, collate_fn=self.collate)


# -- the LightningModule --------------------------------------------------------------------------


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
        spec = mlra.AdapterSpec(
            rank=tp.rank, alpha=tp.alpha, targets=tp.targets, dropout=tp.dropout
        )
        self.targets = mlra.add_adapter(model, tp.adapter_name, spec)
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


# -- the Trainer ----------------------------------------------------------------------------------


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


# -- lineage --------------------------------------------------------------------------------------


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


# -- the job --------------------------------------------------------------------------------------


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
    """Write ``out_dir/adapter`` (the adapter artifact, with ``head``) and ``out_dir/
    base_head.safetensors`` (the no-adaptation head); the base head's sha256 goes into the
    adapter's manifest metadata, so the one verified manifest covers both."""
    import safetensors.torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in base_head.state_dict().items()}
    blob = bytes(safetensors.torch.save(tensors, metadata={"format": "pt"}))
    tmp = out / (BASE_HEAD_FILE + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, out / BASE_HEAD_FILE)
    meta = {
        **metadata,
        "pooling": module.model.pooling,
        "labels": list(module.labels),
        "base_head": {"file": f"../{BASE_HEAD_FILE}", "sha256": sha256_hex(blob)},
    }
    return mlra.save_adapter(
        module.model,
        module.tp.adapter_name,
        out / ADAPTER_DIR,
        metadata=meta,
        modules_to_save=["head"],
        overwrite=True,
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
