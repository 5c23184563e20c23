"""The training data: rows from the prepared splits, tokenised once, batched by length, sharded
across DDP ranks, resumable mid-epoch."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mlra.config import DataParams, TrainParams
from mlra.data.splits import cap_per_domain
from mlra.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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


@dataclasses.dataclass(frozen=True)
class DomainRows:
    """Rows per domain for the modular pass (one module per target domain): each domain's train
    and validation rows kept apart, so each row can go through its own domain's module."""

    train: dict[str, tuple[list[str], list[int]]]  # domain -> texts, label indices (capped)
    val: dict[str, tuple[list[str], list[int]]]
    source_texts: list[str]  # source-domain rows: the base head and the router's source class
    source_labels: list[int]
    feedback_rows: dict[str, int]  # accepted feedback rows per domain in the train split (uncapped)


def load_domain_rows(
    data: DataParams,
    tp: TrainParams,
    domains: Sequence[str],
    prepared_dir: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> DomainRows:
    """The rows of each of ``domains`` in the prepared splits, as :func:`load_training_data` caps
    them (``train.rows_per_domain``, ``train.val_rows_per_domain``, ``train.source_rows``), with
    accepted feedback rows counted in their domain. No source replay: in the modular pass the
    source domain is served by the base model. A domain may have no rows (the caller decides
    whether that is an error); golden rows are never read.
    """
    from mlra.data import LABELS
    from mlra.data.splits import load_split

    labels = tuple(labels or LABELS)
    folder = Path(prepared_dir or data.prepared_dir)
    train = load_split(folder, "train")
    val = load_split(folder, "val")
    index = {label: k for k, label in enumerate(labels)}
    unknown = sorted(set(train["label"]) - set(index))
    if unknown:
        raise DataError(f"{folder}/train.parquet has labels {unknown} outside {list(labels)}")

    def rows(frame: Any, cap: int) -> dict[str, tuple[list[str], list[int]]]:
        frame = cap_per_domain(frame[frame["domain"].isin(set(domains))], cap)
        return {
            d: (list(part["text"]), [index[x] for x in part["label"]])
            for d in domains
            for part in [frame[frame["domain"] == d]]
        }

    source = cap_per_domain(train[train["domain"] == data.source_domain], tp.source_rows)
    if source.empty:
        raise DataError(f"no source-domain rows in {folder}: run `mlra prepare` first")
    feedback = train[train["origin"] == "feedback"]["domain"].value_counts()
    return DomainRows(
        train=rows(train, tp.rows_per_domain),
        val=rows(val, tp.val_rows_per_domain),
        source_texts=list(source["text"]),
        source_labels=[index[x] for x in source["label"]],
        feedback_rows={d: int(feedback.get(d, 0)) for d in domains},
    )
