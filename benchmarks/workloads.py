"""The workloads every section measures: the packaged MiniLM with mlra, PEFT or no adapters, the
packaged tweets, and the training loop a user of each library runs."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from benchmarks.harness import CPU, ROOT, Settings

UPPER_LAYERS = (3, 4, 5)  # "upper" targets: query/value of the top half of MiniLM's 6 layers


@dataclasses.dataclass
class Data:
    demo_train: list[str]  # the demo's domain (apple), train split
    demo_labels: list[int]
    train: dict[str, tuple[list[str], list[int]]]  # target domain -> train rows
    golden: dict[str, tuple[list[str], list[int]]]  # target domain -> golden rows


def load_data() -> Data:
    """Train and golden rows per target domain by the rule of ``mlra prepare`` (id hashes)."""
    from mlra.config import load_params
    from mlra.data import LABELS, load_tweets
    from mlra.data.splits import in_feedback_pool, split_of

    params = load_params(ROOT / "params.yaml").data
    tweets = load_tweets().sort_values("id")  # ids are content hashes: a fair order
    index = {label: k for k, label in enumerate(LABELS)}
    train: dict[str, tuple[list[str], list[int]]] = {}
    golden: dict[str, tuple[list[str], list[int]]] = {}
    for domain in params.target_domains:
        rows = tweets[tweets["domain"] == domain]
        rows = rows[
            [not in_feedback_pool(i, params.feedback_pool, params.seed) for i in rows["id"]]
        ]
        split = [split_of(i, params.splits, params.seed) for i in rows["id"]]
        for name, into in (("train", train), ("golden", golden)):
            part = rows[[s == name for s in split]]
            into[domain] = (list(part["text"]), [index[x] for x in part["label"]])
    demo = train["apple"]
    return Data(demo[0], demo[1], train, golden)


def upper_targets() -> list[str]:
    return [f"layer.{i}.attention.self.{m}" for i in UPPER_LAYERS for m in ("query", "value")]


class Models:
    """Fresh copies of the packaged MiniLM classifier, with mlra, PEFT or no adapters."""

    def __init__(self, settings: Settings, device: torch.device) -> None:
        from mlra.base_model import load_base_model
        from mlra.classifier import SentenceClassifier
        from mlra.data import LABELS

        encoder, self.tokenizer = load_base_model()
        torch.manual_seed(settings.seed)
        self.pristine = SentenceClassifier(encoder, len(LABELS)).to(device)
        self.settings, self.device = settings, device
        self.base_params = sum(p.numel() for p in encoder.parameters())

    def plain(self) -> nn.Module:
        return copy.deepcopy(self.pristine)

    def mlra(self, targets: Sequence[str] = ("query", "value"), names: Sequence[str] = ("a",)):  # type: ignore[no-untyped-def]
        import mlra
        from mlra.training import freeze_base_dropout

        model = self.plain()
        spec = mlra.AdapterSpec(
            rank=self.settings.rank, alpha=self.settings.alpha, targets=list(targets)
        )
        for name in names:
            mlra.add_adapter(model, name, spec)
        mlra.mark_trainable(model, names[0], also=["head"])
        model.train()
        freeze_base_dropout(model)
        return model

    def peft(
        self, targets: Sequence[str] | str = ("query", "value"), names: Sequence[str] = ("a",)
    ):  # type: ignore[no-untyped-def]
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.settings.rank,
            lora_alpha=self.settings.alpha,
            target_modules=list(targets) if not isinstance(targets, str) else targets,
            lora_dropout=0.0,
            modules_to_save=["head"],
        )
        model = get_peft_model(self.plain(), config, adapter_name=names[0])
        for name in names[1:]:
            model.add_adapter(name, config)
        model.set_adapter(names[0])
        return model.train()

    def full(self) -> nn.Module:
        model = self.plain().train()
        model.requires_grad_(True)
        return model


def nudge_adapters(model: nn.Module) -> None:
    """Non-zero B matrices (a trained adapter's shape of work; zeros would be special)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)


def optimiser_for(model: nn.Module, s: Settings, full: bool = False) -> torch.optim.Optimizer:
    head = [p for n, p in model.named_parameters() if p.requires_grad and "head" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "head" not in n]
    return torch.optim.AdamW(
        [{"params": rest, "lr": s.full_lr if full else s.lr}, {"params": head, "lr": s.head_lr}],
        weight_decay=0.01,
    )


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tokenise(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def plain_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out: torch.Tensor = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out


def cached_logits(model: Any, cache: Any) -> Callable[[nn.Module, dict[str, torch.Tensor]], Any]:
    def logits(_: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        hidden = cache.gather(batch["rows"], mask)
        out: torch.Tensor = model.head(model.embed_from(hidden, mask, cache.layers))
        return out

    return logits


def train_step(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    logits_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] = plain_logits,
    autocast: torch.dtype | None = None,
) -> None:
    device = labels.device
    ctx = (
        torch.autocast(device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )
    with ctx:
        logits = logits_fn(model, batch)
    loss = nn.functional.cross_entropy(logits.float(), labels)
    loss.backward()
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)


def build_cache(model: Any, tokenizer: Any, texts: Sequence[str], s: Settings, device: Any) -> Any:
    from mlra.classifier import frozen_prefix
    from mlra.training import FrozenPrefixCache

    layers = frozen_prefix(model)
    assert layers == min(UPPER_LAYERS), layers
    ids = tokenizer(list(texts), truncation=True, max_length=s.max_length)["input_ids"]
    return FrozenPrefixCache(
        model, layers, ids, pad_id=int(tokenizer.pad_token_id or 0), device=device
    )


# -- training loops (what a user of each library runs) ---------------------------------------------


def peft_epoch(
    model: nn.Module,
    opt: Any,
    tok: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    s: Settings,
    generator: torch.Generator,
    device: torch.device,
) -> None:
    """The standard loop: shuffled batches, each tokenised and padded to its longest row."""
    order = torch.randperm(len(texts), generator=generator).tolist()
    for start in range(0, len(order), s.batch_size):
        pick = order[start : start + s.batch_size]
        batch = to(tokenise(tok, [texts[i] for i in pick], s.max_length), device)
        train_step(model, opt, batch, torch.tensor([labels[i] for i in pick], device=device))


def mlra_epochs(
    model: Any,
    opt: Any,
    tok: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    s: Settings,
    seed: int,
    device: torch.device,
    *,
    epochs: int = 1,
    cache: bool = False,
) -> None:
    """mlra's training path: tokenised once, length-bucketed batches (mlra.training's sampler and
    collate), the frozen-prefix cache when the adapter sits in upper layers."""
    from mlra.training.data import BucketBatchSampler, _Collate

    ids = tok(list(texts), truncation=True, max_length=s.max_length)["input_ids"]
    collate = _Collate(int(tok.pad_token_id or 0))
    logits_fn = plain_logits
    if cache:
        logits_fn = cached_logits(model, build_cache(model, tok, texts, s, device))
    sampler = BucketBatchSampler([len(x) for x in ids], s.batch_size, seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for pick in sampler:
            batch = to(collate([(i, ids[i], labels[i]) for i in pick]), device)
            train_step(model, opt, batch, batch.pop("labels"), logits_fn)


class Context:
    """What a section measures with: the settings, and the models and data, loaded on first use
    (a section that needs neither, such as ``library``, loads nothing)."""

    def __init__(
        self, settings: Settings, device: torch.device = CPU, data: Data | None = None
    ) -> None:
        self.settings, self.device = settings, device
        if data is not None:
            self.data = data

    @functools.cached_property
    def models(self) -> Models:
        return Models(self.settings, self.device)

    @functools.cached_property
    def data(self) -> Data:
        return load_data()
