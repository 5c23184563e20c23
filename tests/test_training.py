"""Training with Lightning on a tiny random BERT: checkpoints, resume after a kill, DDP, precision.

The file is also a script (``python tests/test_training.py OUT ...``) that trains the tiny model
once: the resume test kills it with SIGKILL, and the DDP test runs it with two processes
(Lightning's DDP launcher re-runs the script, which it could not do with pytest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LABELS = ("negative", "neutral", "positive")
WORDS = {
    "negative": ["bad", "awful", "hate", "late", "broken"],
    "neutral": ["the", "a", "is", "on", "today", "flight", "game", "car", "phone"],
    "positive": ["good", "great", "love", "fun", "best"],
}


def tiny_tokenizer() -> Any:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
        w for ws in WORDS.values() for w in ws
    ]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def tiny_rows(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Sentences of neutral filler with (for non-neutral rows) one sentiment word."""
    g = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(torch.randint(0, 3, (1,), generator=g))
        words = [
            WORDS["neutral"][int(i)]
            for i in torch.randint(
                0, 9, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g
            )
        ]
        if label != 1:  # three cue words: a signal that survives mean pooling
            for k in torch.randint(0, 5, (3,), generator=g).tolist():
                words.insert(
                    int(torch.randint(0, len(words), (1,), generator=g)), WORDS[LABELS[label]][k]
                )
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def tiny_train_params(**overrides: Any) -> Any:
    from mlra.training import EarlyStoppingParams, TrainParams

    values: dict[str, Any] = dict(
        out_dir="unused",
        checkpoint_dir="unused",
        adapter_name="tiny",
        seed=0,
        deterministic=True,
        pooling="mean",
        max_length=24,
        rows_per_domain=0,
        val_rows_per_domain=0,
        source_rows=0,
        batch_size=16,
        accumulate_grad_batches=1,
        max_epochs=2,
        max_steps=-1,
        lr=5e-2,
        head_lr=5e-2,
        weight_decay=0.0,
        schedule="linear",
        warmup_share=0.1,
        val_every_steps=0,
        checkpoint_every_steps=2,
        log_every_steps=1,
        early_stopping=EarlyStoppingParams(monitor="val_macro_f1", patience=5, min_delta=0.0),
        accelerator="cpu",
        devices=1,
        strategy="auto",
        precision="32-true",
        experiment="tiny",
    )
    from mlra import AdapterSpec

    spec = {"rank": 4, "alpha": 8.0, "targets": ("query", "value"), "dropout": 0.0}
    spec |= {k: overrides.pop(k) for k in list(overrides) if k in AdapterSpec.__dataclass_fields__}
    values["adapter"] = AdapterSpec(**spec)
    values.update(overrides)
    return TrainParams(**values)


def _tiny_bert() -> Any:
    sys.path.insert(0, str(HERE))
    from conftest import make_tiny_bert

    return make_tiny_bert()


def run_tiny(
    out: Path, *, resume: bool = False, delay: float = 0.0, **overrides: Any
) -> dict[str, Any]:
    """Train the tiny model; write ``out/result.json`` (rank 0) and return it."""
    import copy

    import lightning as L

    from mlra.classifier import SentenceClassifier
    from mlra.training import (
        AdapterClassifier,
        TweetDataModule,
        fit,
        resumable_checkpoint,
        save_candidate,
    )

    tp = tiny_train_params(**overrides)
    L.seed_everything(tp.seed, verbose=False)
    tokenizer = tiny_tokenizer()
    model = SentenceClassifier(_tiny_bert(), 3, pooling=tp.pooling)
    base_head = copy.deepcopy(model.head)
    module = AdapterClassifier(model, tp, LABELS, run_key="tiny")
    data = TweetDataModule(
        tokenizer, tiny_rows(256, 1), tiny_rows(64, 2),
        batch_size=tp.batch_size, max_length=tp.max_length, seed=tp.seed,
    )  # fmt: skip
    callbacks = []
    if delay:

        class Slow(L.Callback):
            def on_train_batch_start(self, *args: Any) -> None:
                time.sleep(delay)

        callbacks.append(Slow())
    ckpt_dir = out / "ckpt"
    start = resumable_checkpoint(ckpt_dir, "tiny") if resume else None
    trainer = fit(module, data, tp, checkpoint_dir=ckpt_dir, resume=start, progress_bar=False,
                  callbacks=callbacks)  # fmt: skip
    trained = {k: v for k, v in model.state_dict().items() if f"model.{k}" in module.trainable_keys}
    digest = hashlib.sha256()
    for key in sorted(trained):
        digest.update(key.encode() + trained[key].numpy().tobytes())
    result = {
        "step": trainer.global_step,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "weights_sha256": digest.hexdigest(),
        "resumed_from": str(start) if start else None,
        "world_size": trainer.world_size,
    }
    if trainer.is_global_zero:
        save_candidate(module, base_head, out / "artifact", {"test": True})
        (out / "result.json").write_text(json.dumps(result))
    return result


def _script(out: Path, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), str(out), *args]


# -- precision ------------------------------------------------------------------------------------


def test_precision_values_are_checked_against_the_hardware() -> None:
    from mlra.errors import ConfigError
    from mlra.training import check_precision

    check_precision("32-true", "cpu")
    check_precision("bf16-mixed", "cpu")  # runs on CPU (slowly)
    with pytest.raises(ConfigError, match="'16-mixed' needs a CUDA GPU"):
        check_precision("16-mixed", "cpu")
    with pytest.raises(ConfigError, match=r"one of 32-true, bf16-mixed, 16-mixed, got 'fp8'"):
        check_precision("fp8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            check_precision("32-true", "cuda")
        with pytest.raises(ConfigError, match="'16-mixed' needs a CUDA GPU"):
            check_precision("16-mixed", "auto")


def test_train_params_name_the_bad_value() -> None:
    from mlra.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.precision must be one of .*got '16'"):
        tiny_train_params(precision="16")
    with pytest.raises(ConfigError, match=r"train.max_steps .*got 0"):
        tiny_train_params(max_steps=0)
    with pytest.raises(ConfigError, match=r"train.pooling .*got 'max'"):
        tiny_train_params(pooling="max")


def test_the_trainer_refuses_16_mixed_on_cpu_before_training() -> None:
    from mlra.errors import ConfigError
    from mlra.training import build_trainer

    with pytest.raises(ConfigError, match="16-mixed"):
        build_trainer(tiny_train_params(precision="16-mixed"), checkpoint_dir=None)


# -- data -----------------------------------------------------------------------------------------


def test_batch_sampler_shards_resumes_and_reshuffles() -> None:
    from mlra.training import BucketBatchSampler

    lengths = [(i * 7) % 23 + 1 for i in range(100)]
    whole = list(BucketBatchSampler(lengths, 8, seed=3))
    assert len(whole) == 13 and sorted(len(b) for b in whole)[1:] == [8] * 12  # ceil(100 / 8)
    assert sorted(i for b in whole for i in b) == list(range(100))  # each row once per epoch
    # resuming after 5 batches yields exactly the remaining batches of the same epoch
    s = BucketBatchSampler(lengths, 8, seed=3)
    s.load_state_dict({"epoch": 0, "consumed": 5})
    assert list(s) == whole[5:] and s.state_dict() == {"epoch": 0, "consumed": 13}
    s.set_epoch(1)
    assert list(s) != whole  # another epoch, another order
    # two ranks: disjoint shards, the same number of batches each
    r0, r1 = (list(BucketBatchSampler(lengths, 8, seed=3, rank=r, world=2)) for r in (0, 1))
    assert len(r0) == len(r1) == 6
    assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}


def test_datamodule_pads_each_batch_to_its_longest_row(tmp_path: Path) -> None:
    from mlra.training import TweetDataModule

    tok = tiny_tokenizer()
    dm = TweetDataModule(
        tok, tiny_rows(64, 0), tiny_rows(8, 1), batch_size=8, max_length=10, seed=0
    )
    widths = set()
    for batch in dm.train_dataloader():
        mask = batch["attention_mask"]
        assert mask.shape[1] == int(mask.sum(1).max()) <= 10  # no column of pure padding
        widths.add(mask.shape[1])
    assert len(widths) > 1


# -- training, checkpoints, resume ----------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, run_tiny(out)


def test_tiny_training_learns_and_writes_an_adapter(
    uninterrupted: tuple[Path, dict[str, Any]],
) -> None:
    import mlra
    from mlra.training import BASE_HEAD_FILE

    out, result = uninterrupted
    assert result["step"] == 32  # 2 epochs × 16 batches
    assert result["metrics"]["val_macro_f1"] > 0.6  # learnt the cue words (chance ~0.33)
    manifest = mlra.inspect_adapter(out / "artifact" / "adapter")
    assert manifest.modules_to_save == ("head",)
    assert (
        manifest.metadata["base_head"]["sha256"]
        == hashlib.sha256((out / "artifact" / BASE_HEAD_FILE).read_bytes()).hexdigest()
    )


def test_checkpoints_hold_only_the_adapter_and_the_head(
    uninterrupted: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = uninterrupted
    ckpt = torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = set(ckpt["state_dict"])
    assert keys and all(
        ".lora_A.tiny." in k or ".lora_B.tiny." in k or k.startswith("model.head.") for k in keys
    )
    assert len(keys) == 2 * 2 * 2 + 2  # A, B × query, value × 2 layers, head weight + bias
    assert ckpt["mlra"]["run_key"] == "tiny"
    assert "hyper_parameters" not in ckpt


def test_a_checkpoint_of_another_configuration_is_refused(
    uninterrupted: tuple[Path, dict[str, Any]],
) -> None:
    from mlra.classifier import SentenceClassifier
    from mlra.errors import ConfigError
    from mlra.training import AdapterClassifier

    out, _ = uninterrupted
    ckpt = torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    other = AdapterClassifier(
        SentenceClassifier(_tiny_bert(), 3), tiny_train_params(targets=("query",)), LABELS
    )
    with pytest.raises(ConfigError, match="does not hold this model's adapter and head"):
        other.on_load_checkpoint(ckpt)
    assert other.on_load_checkpoint is not None


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(
    uninterrupted: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, expected = uninterrupted
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_script(tmp_path, "--delay", "0.25"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(p.stem[4:]) for p in (tmp_path / "ckpt").glob("step*.ckpt")]
            if steps and max(steps) >= 6:
                time.sleep(0.1)  # let the write finish: the next batch sleeps 0.25 s first
                proc.send_signal(signal.SIGKILL)
                killed_at = max(steps)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL and killed_at < 16  # killed, in the first epoch
    assert not (tmp_path / "result.json").exists()

    done = subprocess.run(
        _script(tmp_path, "--resume"), env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert resumed["resumed_from"] and resumed["step"] == expected["step"]
    assert resumed["weights_sha256"] == expected["weights_sha256"]
    assert resumed["metrics"] == pytest.approx(expected["metrics"], abs=1e-6)


def test_ddp_on_two_cpu_processes_produces_a_valid_adapter(tmp_path: Path) -> None:
    import mlra
    from mlra.classifier import SentenceClassifier

    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(_script(tmp_path, "--devices", "2", "--strategy", "ddp"), env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    assert result["step"] == 16  # each rank takes half of the 16 batches per epoch, 2 epochs
    model = SentenceClassifier(_tiny_bert(), 3)
    assert (
        mlra.load_adapter(model, tmp_path / "artifact" / "adapter") == "tiny"
    )  # hashes, base check


def test_mlflow_logger_records_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from mlra.training.job import _mlflow_logger

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    logger = _mlflow_logger(tiny_train_params(), {"git_commit": "abc"})
    logger.log_metrics({"val_macro_f1": 0.5}, step=1)
    logger.finalize("success")
    run = MlflowClient(uri).get_run(logger.run_id)
    assert run.data.metrics["val_macro_f1"] == 0.5 and run.data.tags["git_commit"] == "abc"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    a = parser.parse_args()
    run_tiny(a.out, resume=a.resume, delay=a.delay, devices=a.devices, strategy=a.strategy)
