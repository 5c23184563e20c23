"""``mlra demo``: adapt the packaged MiniLM to one tweet domain and show what the adapter gains.

1. Split the domain's tweets by id hash (70 % train, 30 % test; stable across runs).
2. Base: the frozen MiniLM with a linear head trained on its pooled embeddings (no adapter).
3. Adapted: a rank-8 adapter on query/value, trained jointly with that head for a few hundred
   steps (only the adapter and the head learn; the base stays frozen).
4. Save the adapter and head as an artifact, reload it in a fresh process onto a freshly loaded
   base model, and check that it predicts exactly what the in-memory model predicted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mlra
from mlra.classifier import SentenceClassifier, batches, embed_texts, fit_head, predict
from mlra.errors import ConfigError, IntegrityError
from mlra.metrics import Scores, scores

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class DemoConfig:
    domain: str = "apple"
    steps: int = 300
    batch_size: int = 16
    max_length: int = 64
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "value")
    lr: float = 1e-3
    test_share: float = 0.3
    max_rows: int | None = None  # cap on the domain's rows (for quick runs)
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "max_length", "rank"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"demo {key} must be a positive integer, got {value!r}")
        if not 0.0 < self.test_share < 1.0:
            raise ConfigError(f"demo test_share must lie in (0, 1), got {self.test_share!r}")
        if self.max_rows is not None and self.max_rows < 10:
            raise ConfigError(f"demo max_rows must be at least 10, got {self.max_rows!r}")


@dataclass
class DemoResult:
    config: DemoConfig
    train_rows: int
    test_rows: int
    base: Scores
    adapted: Scores
    reloaded: Scores
    trainable_params: int
    base_params: int
    artifact: str
    artifact_bytes: int
    base_model_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("base", "adapted", "reloaded"):
            data[key] = getattr(self, key).to_dict()
        return data


def _split(config: DemoConfig) -> tuple[list[str], list[int], list[str], list[int]]:
    from mlra.config import SplitShares
    from mlra.data import LABELS, load_tweets
    from mlra.data.splits import split_of

    tweets = load_tweets()
    rows = tweets[tweets["domain"] == config.domain]
    if rows.empty:
        known = sorted(set(tweets["domain"]))
        raise ConfigError(f"no tweets in domain {config.domain!r}; domains: {', '.join(known)}")
    if config.max_rows is not None:  # ids are content hashes: sorting by id is a fair sample
        rows = rows.sort_values("id").iloc[: config.max_rows]
    shares = SplitShares(train=1 - config.test_share, val=0.0, test=config.test_share, golden=0.0)
    split = [split_of(i, shares, config.seed) for i in rows["id"]]
    index = {label: k for k, label in enumerate(LABELS)}
    train = rows[[s == "train" for s in split]]
    test = rows[[s == "test" for s in split]]
    return (
        list(train["text"]),
        [index[x] for x in train["label"]],
        list(test["text"]),
        [index[x] for x in test["label"]],
    )


def run_demo(config: DemoConfig, out_dir: Path, progress: Progress | None = None) -> DemoResult:
    from mlra.base_model import base_model_path, load_base_model
    from mlra.data import LABELS

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    torch.manual_seed(config.seed)
    train_x, train_y, test_x, test_y = _split(config)
    encoder, tokenizer = load_base_model()
    model = SentenceClassifier(encoder, len(LABELS))
    y_train, y_test = torch.tensor(train_y), torch.tensor(test_y)

    # -- the base: frozen encoder, head fitted on its embeddings --------------------------------
    features = embed_texts(model, tokenizer, train_x, max_length=config.max_length)
    fit_head(model.head, features, y_train)
    base = scores(y_test, predict(model, tokenizer, test_x, max_length=config.max_length), LABELS)
    seconds["base"] = time.perf_counter() - clock

    # -- the adapter: trained with the head, the base frozen ------------------------------------
    clock = time.perf_counter()
    spec = mlra.AdapterSpec(rank=config.rank, alpha=config.alpha, targets=config.targets)
    mlra.add_adapter(model, config.domain, spec)
    trainable = mlra.mark_trainable(model, config.domain, also=["head"])
    optimiser = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=config.steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    step = 0
    while step < config.steps:
        order = torch.randperm(len(train_x), generator=generator).tolist()
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            pick = order[start : start + config.batch_size]
            batch = next(
                batches(tokenizer, [train_x[i] for i in pick], len(pick), config.max_length)
            )
            loss = nn.functional.cross_entropy(model(**batch), y_train[pick])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            if progress:
                progress("training", step, config.steps)
            if step == config.steps:
                break
    predicted = predict(model, tokenizer, test_x, max_length=config.max_length)
    adapted = scores(y_test, predicted, LABELS)
    seconds["train"] = time.perf_counter() - clock

    # -- save, then reload in a fresh process ---------------------------------------------------
    clock = time.perf_counter()
    artifact = out_dir / f"adapter-{config.domain}"
    mlra.save_adapter(
        model,
        config.domain,
        artifact,
        modules_to_save=["head"],
        overwrite=True,
        metadata={"demo": asdict(config), "base": base.to_dict(), "adapted": adapted.to_dict()},
    )
    check = out_dir / "demo-test.json"
    check.write_text(
        json.dumps({"texts": test_x, "labels": test_y, "max_length": config.max_length})
    )
    reloaded_run = subprocess.run(
        [sys.executable, "-m", "mlra.demo", str(artifact), str(check)],
        capture_output=True,
        text=True,
    )
    if reloaded_run.returncode != 0:
        raise IntegrityError(
            f"reloading {artifact} in a fresh process failed:\n{reloaded_run.stderr}"
        )
    reloaded_predictions = torch.tensor(json.loads(reloaded_run.stdout.splitlines()[-1]))
    if not torch.equal(reloaded_predictions, predicted):
        changed = int((reloaded_predictions != predicted).sum())
        raise IntegrityError(f"the reloaded adapter predicts differently on {changed} test rows")
    seconds["save_and_reload"] = time.perf_counter() - clock

    return DemoResult(
        config=config,
        train_rows=len(train_x),
        test_rows=len(test_x),
        base=base,
        adapted=adapted,
        reloaded=scores(y_test, reloaded_predictions, LABELS),
        trainable_params=sum(p.numel() for p in mlra.adapter_parameters(model, config.domain)),
        base_params=sum(p.numel() for p in encoder.parameters())
        - sum(p.numel() for p in mlra.adapter_parameters(model, config.domain)),
        artifact=str(artifact),
        artifact_bytes=sum(f.stat().st_size for f in artifact.iterdir()),
        base_model_bytes=(base_model_path() / "model.safetensors").stat().st_size,
        seconds=seconds,
    )


def _reload_and_predict(artifact: str, test_file: str) -> list[int]:
    """In a fresh process: a fresh base model, the artifact loaded strictly, predictions."""
    from mlra.base_model import load_base_model
    from mlra.data import LABELS

    encoder, tokenizer = load_base_model()
    model = SentenceClassifier(encoder, len(LABELS))
    mlra.load_adapter(model, artifact)
    data = json.loads(Path(test_file).read_text())
    return predict(model, tokenizer, data["texts"], max_length=data["max_length"]).tolist()


if __name__ == "__main__":
    print(json.dumps(_reload_and_predict(sys.argv[1], sys.argv[2])))
