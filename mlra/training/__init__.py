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

from mlra.candidate import ADAPTER_DIR, BASE_HEAD_FILE
from mlra.config import PRECISIONS, EarlyStoppingParams, TrainParams
from mlra.training.cache import FrozenPrefixCache
from mlra.training.data import (
    BucketBatchSampler,
    DomainRows,
    TrainingData,
    TweetDataModule,
    load_domain_rows,
    load_training_data,
    make_datamodule,
)
from mlra.training.job import TrainResult, lineage_metadata, save_candidate, train
from mlra.training.modular import ModularTrainResult, ModuleResult, train_modules
from mlra.training.module import AdapterClassifier, freeze_base_dropout
from mlra.training.routed import ModularClassifier, ModularDataModule
from mlra.training.trainer import (
    build_trainer,
    check_precision,
    fit,
    quiet_lightning,
    resolve_accelerator,
    resumable_checkpoint,
)

__all__ = [
    "ADAPTER_DIR",
    "BASE_HEAD_FILE",
    "PRECISIONS",
    "AdapterClassifier",
    "BucketBatchSampler",
    "DomainRows",
    "EarlyStoppingParams",
    "FrozenPrefixCache",
    "ModularClassifier",
    "ModularDataModule",
    "ModularTrainResult",
    "ModuleResult",
    "TrainParams",
    "TrainResult",
    "TrainingData",
    "TweetDataModule",
    "build_trainer",
    "check_precision",
    "fit",
    "freeze_base_dropout",
    "lineage_metadata",
    "load_domain_rows",
    "load_training_data",
    "make_datamodule",
    "quiet_lightning",
    "resolve_accelerator",
    "resumable_checkpoint",
    "save_candidate",
    "train",
    "train_modules",
]
