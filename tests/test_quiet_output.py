"""What a user sees while training and evaluating: Lightning's lines once and only those that
matter, a progress bar that counts what the run will do, progress on a long evaluation."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mlra.config import load_params
from mlra.training import build_trainer, quiet_lightning

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def root_console() -> Iterator[io.StringIO]:
    """A handler on the root logger, as Prefect's console handler is in a flow run."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_lightning_lines_print_once_and_info_chatter_not_at_all(
    root_console: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    quiet_lightning()
    rank_zero_info("GPU available: False, used: False")
    logging.getLogger("lightning.pytorch.trainer.trainer").warning("a warning that matters")
    printed = root_console.getvalue() + "".join(capfd.readouterr())
    assert "GPU available" not in printed
    assert printed.count("a warning that matters") == 1


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Seen(L.Callback):
    """What the progress bar shows: its total and title as the epoch starts, its metrics."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, module: Any) -> None:
        bar = trainer.progress_bar_callback
        assert bar is not None
        self.seen["total"] = bar.total_train_batches
        self.seen["description"] = bar._get_train_description(trainer.current_epoch).strip()

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        bar = trainer.progress_bar_callback
        assert bar is not None
        self.seen["metrics"] = bar.get_metrics(trainer, module)


def test_progress_bar_counts_the_steps_the_run_makes_and_hides_v_num(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from lightning.pytorch.loggers import CSVLogger

    tp = dataclasses.replace(
        load_params(REPO / "params.yaml").train,
        max_steps=3, max_epochs=1, accelerator="cpu", devices=1, precision="32-true",
        accumulate_grad_batches=1, val_every_steps=0, log_every_steps=1,
    )  # fmt: skip
    seen = _Seen()
    trainer = build_trainer(
        tp,
        checkpoint_dir=None,
        logger=CSVLogger(tmp_path),  # a logger: Lightning's bar would show its v_num
        progress_bar=True,
        callbacks=[seen],
    )
    data = TensorDataset(torch.randn(20, 4), torch.randint(0, 2, (20,)))
    trainer.fit(_Tiny(), train_dataloaders=DataLoader(data, batch_size=2))  # 10 batches an epoch
    assert trainer.global_step == 3
    assert seen.seen["total"] == 3  # max_steps ends the run before the epoch does
    assert seen.seen["description"] == "epoch 1/1"  # not Lightning's 0-based "Epoch 0/0"
    assert "train_loss" in seen.seen["metrics"] and "v_num" not in seen.seen["metrics"]
    printed = "".join(capfd.readouterr())
    assert "litlogger" not in printed and "GPU available" not in printed
    assert "Epoch 0/0" not in printed and "v_num" not in printed


def test_evaluation_progress_when_output_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlra.evaluation import _progress

    with _progress(1_500, "evaluating 2 models", every_s=0.0) as advance:
        advance(512)
        advance(512)
        advance(476)  # done: the command's own summary follows, no progress line
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(", ", 1)[0] for line in lines] == [
        "evaluating 2 models: 512/1,500 rows",
        "evaluating 2 models: 1,024/1,500 rows",
    ]
    with _progress(100, "quick", every_s=60.0) as advance:
        advance(100)
    assert capsys.readouterr().err == ""  # a short step prints nothing
