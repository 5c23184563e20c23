"""Train the default adapter with bf16-mixed on a CUDA GPU; report samples/s and peak GPU memory.

    python scripts/gpu_train.py [--steps 200] [--batch-size 32] [--precision bf16-mixed]

Runs the same code as ``mlra train`` (the LightningModule, data module and Trainer of
``mlra.training``) on the prepared splits (``mlra prepare`` first) with params.yaml's ``train``
section, overriding only the accelerator (cuda), precision, steps and batch size. No code changes
are needed for a GPU: ``train.accelerator: auto`` already picks it. Prints one JSON line:
throughput (training samples per second, timed from the 10th step on, so start-up and CUDA
warm-up are left out), peak GPU memory (``torch.cuda.max_memory_allocated``), the device name and
the last validation metrics. Exits 2, with a message, when no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="bf16-mixed")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_train: no CUDA GPU is visible (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}). Run it on a machine with a "
            "GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2

    import lightning as L

    from mlra._env import apply_runtime_defaults
    from mlra.base_model import load_base_model
    from mlra.classifier import SentenceClassifier
    from mlra.config import load_params
    from mlra.data import LABELS
    from mlra.training import AdapterClassifier, fit, load_training_data, make_datamodule

    apply_runtime_defaults()
    params = load_params(args.params)
    tp = dataclasses.replace(
        params.train,
        accelerator="cuda",
        devices=1,
        precision=args.precision,
        batch_size=args.batch_size,
        max_steps=args.steps,
        max_epochs=1000,
        rows_per_domain=0,  # all target rows: enough for the steps asked for
        val_every_steps=0,
    )
    data = load_training_data(params.data, tp)
    L.seed_everything(tp.seed, verbose=False)
    encoder, tokenizer = load_base_model()
    module = AdapterClassifier(SentenceClassifier(encoder, len(LABELS), tp.pooling), tp, LABELS)
    datamodule = make_datamodule(tokenizer, data, tp)

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.start: float | None = None
            self.samples = 0

        def on_train_batch_end(self, trainer: L.Trainer, *rest: Any) -> None:
            batch = rest[2]
            if trainer.global_step == 10:
                torch.cuda.synchronize()
                self.start = time.perf_counter()
            elif self.start is not None:
                self.samples += int(batch["labels"].shape[0])

    clock = Clock()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as ckpt:
        trainer = fit(module, datamodule, tp, checkpoint_dir=ckpt, progress_bar=False,
                      callbacks=[clock])  # fmt: skip
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - (clock.start or time.perf_counter())
    report = {
        "device": torch.cuda.get_device_name(),
        "precision": tp.precision,
        "batch_size": tp.batch_size,
        "steps": trainer.global_step,
        "samples_per_s": round(clock.samples / elapsed, 1) if elapsed > 0 else None,
        "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "val_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "torch": torch.__version__,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
