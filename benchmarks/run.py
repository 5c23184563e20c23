"""mlra against PEFT, full fine-tuning and the physical floor, measured side by side in one run.

    python -m benchmarks.run            # the full run (make bench): results/*.json + README table
    python -m benchmarks.run --quick    # a 1–2 minute smoke run into .mlra/bench-quick

Every figure is a ratio against a baseline measured in the same run: the methods of a section run
interleaved (A B C A B C …, the order rotating each round), each round gives one ratio per method,
and the median ratio is reported with its spread (quartiles, min–max). The machine is shared, so
absolute seconds move with the load; ratios of neighbouring measurements move much less.

Sections: steps (1), epoch (the ≤ 0.8× PEFT target), accuracy (2), memory (3), inference (4),
route (5), artifact (6), gpu (7, only with CUDA). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
SECTIONS = ("steps", "epoch", "accuracy", "memory", "inference", "route", "artifact", "gpu")
UPPER_LAYERS = (3, 4, 5)  # "upper" targets: query/value of the top half of MiniLM's 6 layers
H200_BF16_DENSE_FLOPS = 989e12
CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Settings:
    batch_size: int = 8  # small: a training step of MiniLM takes seconds on the shared 2 cores
    max_length: int = 64
    rank: int = 8
    alpha: float = 16.0
    threads: int = 1  # torch threads: on a shared 2-core machine, 2 threads contend with others
    step_rounds: int = 3  # timed rounds per section (after one warm-up round)
    epoch_rows: int = 32  # demo (apple) train rows per timed epoch
    epoch_rounds: int = 2
    acc_rows_per_domain: int = 16  # training rows per target domain for the accuracy budget
    acc_golden_per_domain: int = 16
    infer_rounds: int = 5
    route_rounds: int = 3
    artifact_rounds: int = 5
    gpu_steps: int = 30
    lr: float = 1e-3  # adapters (params.yaml train.lr)
    head_lr: float = 3e-3
    full_lr: float = 5e-5  # full fine-tuning: the usual BERT fine-tuning rate
    seed: int = 0


QUICK = Settings(
    batch_size=4,
    step_rounds=1,
    epoch_rows=8,
    epoch_rounds=1,
    acc_rows_per_domain=2,
    acc_golden_per_domain=4,
    infer_rounds=1,
    route_rounds=1,
    artifact_rounds=1,
    gpu_steps=5,
)


# -- measuring ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device = CPU,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``rounds`` times, interleaved with a rotating order."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and extremes."""
    v = sorted(values)
    if len(v) == 1:
        q1 = q3 = v[0]
    else:
        q = statistics.quantiles(v, n=4, method="inclusive")
        q1, q3 = q[0], q[2]
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "min": v[0], "max": v[-1]}


def ratios(times: dict[str, list[float]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per method: its seconds and its per-round ratio to ``baseline`` (median with spread)."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in times.items():
        per_round = [t / b for t, b in zip(values, times[baseline], strict=True)]
        out[name] = {"seconds": spread(values), "ratio": spread(per_round), "vs": baseline}
    return out


def ratio_between(times: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    per_round = [x / y for x, y in zip(times[a], times[b], strict=True)]
    return {"of": a, "vs": b, "ratio": spread(per_round)}


def machine(load_before: tuple[float, ...] | None = None) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _mem_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "loadavg": list(os.getloadavg()),
    }
    if load_before is not None:
        info["loadavg_before"] = list(load_before)
    with contextlib.suppress(ImportError):
        import peft
        import transformers

        info["peft"], info["transformers"] = peft.__version__, transformers.__version__
    return info


def _mem_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


# -- data and models ------------------------------------------------------------------------------


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
    from mlra.training import BucketBatchSampler, _Collate

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


# -- sections -------------------------------------------------------------------------------------


def section_steps(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """One training step on one fixed batch, per method; the floor is the frozen forward + head."""
    dev = m.device
    texts, labels = data.demo_train[: s.batch_size], data.demo_labels[: s.batch_size]
    batch = to(tokenise(m.tokenizer, texts, s.max_length), dev)
    batch["rows"] = torch.arange(len(texts), device=dev)
    y = torch.tensor(labels, device=dev)
    base = m.plain().eval()

    mlra_qv = m.mlra()
    mlra_same = m.mlra()
    mlra_same.train()  # PEFT's structure: the base's dropout on, as model.train() leaves it
    mlra_up = m.mlra(upper_targets())
    cache = build_cache(mlra_up, m.tokenizer, texts, s, dev)
    peft_qv, peft_up, full = m.peft(), m.peft(upper_targets()), m.full()
    opts = {
        id(x): optimiser_for(x, s, full=x is full)
        for x in (mlra_qv, mlra_same, mlra_up, peft_qv, peft_up, full)
    }

    def step(model: nn.Module, fn: Any = plain_logits) -> Callable[[], None]:
        return lambda: train_step(model, opts[id(model)], batch, y, fn)

    def forward() -> None:
        with torch.no_grad():
            plain_logits(base, batch)

    fns = {
        "forward_only": forward,
        "peft_qv": step(peft_qv),
        "mlra_qv": step(mlra_qv),
        "mlra_qv_dropout_on": step(mlra_same),
        "full_ft": step(full),
        "peft_upper": step(peft_up),
        "mlra_upper_cached": step(mlra_up, cached_logits(mlra_up, cache)),
    }
    times = interleaved(fns, s.step_rounds, dev)
    return {
        "batch": {
            "rows": len(texts),
            "tokens_padded": int(batch["input_ids"].numel()),
            "width": int(batch["input_ids"].shape[1]),
        },
        "vs_peft": ratios(times, "peft_qv"),
        "vs_forward_only": ratios(times, "forward_only"),
        "pairs": {
            "mlra_upper_cached_vs_peft_upper": ratio_between(
                times, "mlra_upper_cached", "peft_upper"
            ),
            "mlra_qv_dropout_on_vs_peft_qv": ratio_between(times, "mlra_qv_dropout_on", "peft_qv"),
        },
        "trainable_params": {
            "mlra_qv": trainable(mlra_qv),
            "peft_qv": trainable(peft_qv),
            "mlra_upper": trainable(mlra_up),
            "full_ft": trainable(full),
            "base": m.base_params,
        },
    }


def section_epoch(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """Epochs over the demo data (apple train rows): mlra's loop vs the standard PEFT loop."""
    dev = m.device
    texts, labels = data.demo_train[: s.epoch_rows], data.demo_labels[: s.epoch_rows]
    mlra_qv, peft_qv = m.mlra(), m.peft()
    mlra_up, peft_up = m.mlra(upper_targets()), m.peft(upper_targets())
    opts = {id(x): optimiser_for(x, s) for x in (mlra_qv, peft_qv, mlra_up, peft_up)}
    gen = torch.Generator().manual_seed(s.seed)
    tok = m.tokenizer
    counter = iter(range(10**6))

    def peft_run(model: nn.Module, epochs: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(epochs):
                peft_epoch(model, opts[id(model)], tok, texts, labels, s, gen, dev)

        return run

    def mlra_run(model: nn.Module, epochs: int, cache: bool) -> Callable[[], None]:
        return lambda: mlra_epochs(
            model,
            opts[id(model)],
            tok,
            texts,
            labels,
            s,
            next(counter),
            dev,
            epochs=epochs,
            cache=cache,
        )

    one = interleaved(
        {"peft_qv": peft_run(peft_qv, 1), "mlra_qv": mlra_run(mlra_qv, 1, False)},
        s.epoch_rounds,
        dev,
        warmup=0,
    )
    two = interleaved(
        {
            "peft_upper_2ep": peft_run(peft_up, 2),
            "mlra_upper_cached_2ep": mlra_run(mlra_up, 2, True),
        },
        s.epoch_rounds,
        dev,
        warmup=0,
    )
    ids = tok(texts, truncation=True, max_length=s.max_length)["input_ids"]
    lengths = [len(x) for x in ids]
    return {
        "rows": len(texts),
        "batch_size": s.batch_size,
        "one_epoch_qv": ratios(one, "peft_qv"),
        "upper_layers": {
            "two_epochs": ratio_between(two, "mlra_upper_cached_2ep", "peft_upper_2ep"),
            "seconds": {k: spread(v) for k, v in two.items()},
        },
        "padding": padding_stats(lengths, s.batch_size, s.seed),
    }


def padding_stats(lengths: Sequence[int], batch_size: int, seed: int) -> dict[str, float]:
    """Padded tokens per real token: random batches vs mlra's length buckets (one epoch)."""
    from mlra.training import BucketBatchSampler

    real = sum(lengths)
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    rand = sum(
        max(lengths[i] for i in order[k : k + batch_size]) * len(order[k : k + batch_size])
        for k in range(0, len(order), batch_size)
    )
    bucket = sum(
        max(lengths[i] for i in b) * len(b) for b in BucketBatchSampler(lengths, batch_size, seed)
    )
    return {
        "random_batches": rand / real,
        "length_buckets": bucket / real,
        "mean_tokens": real / len(lengths),
    }


def section_accuracy(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """Every method from the same head (head-only: L-BFGS on frozen embeddings of the training
    rows), then one epoch over the same rows; golden-set scores per target domain."""
    from mlra.classifier import embed_texts, fit_head, predict
    from mlra.data import LABELS
    from mlra.evaluation import scores

    dev, tok = m.device, m.tokenizer
    texts: list[str] = []
    labels: list[int] = []
    for domain, (x, y) in data.train.items():
        texts += x[: s.acc_rows_per_domain]
        labels += y[: s.acc_rows_per_domain]
        del domain
    start = time.perf_counter()
    base = m.plain().eval()
    features = embed_texts(base, tok, texts, max_length=s.max_length)
    torch.manual_seed(s.seed)
    fit_head(base.head, features, torch.tensor(labels))
    head_seconds = time.perf_counter() - start
    head_state = copy.deepcopy(base.head.state_dict())

    def with_head(model: Any) -> Any:
        target = model.base_model.model.head if hasattr(model, "base_model") else model.head
        if hasattr(target, "modules_to_save"):  # PEFT's copy of the head
            for module in [target.original_module, *target.modules_to_save.values()]:
                module.load_state_dict(head_state)
        else:
            target.load_state_dict(head_state)
        return model

    results: dict[str, Any] = {}
    seconds: dict[str, float] = {"head_only": head_seconds}
    runs: dict[str, Callable[[], nn.Module]] = {}

    def run_peft() -> nn.Module:
        model = with_head(m.peft())
        peft_epoch(
            model,
            optimiser_for(model, s),
            tok,
            texts,
            labels,
            s,
            torch.Generator().manual_seed(s.seed),
            dev,
        )
        return model

    def run_full() -> nn.Module:
        model = with_head(m.full())
        peft_epoch(
            model,
            optimiser_for(model, s, full=True),
            tok,
            texts,
            labels,
            s,
            torch.Generator().manual_seed(s.seed),
            dev,
        )
        return model

    def run_mlra(targets: Sequence[str], cache: bool) -> Callable[[], nn.Module]:
        def run() -> nn.Module:
            model = with_head(m.mlra(targets))
            mlra_epochs(
                model, optimiser_for(model, s), tok, texts, labels, s, s.seed, dev, cache=cache
            )
            return model

        return run

    runs = {
        "peft_qv": run_peft,
        "mlra_qv": run_mlra(("query", "value"), False),
        "mlra_upper_cached": run_mlra(upper_targets(), True),
        "full_ft": run_full,
    }
    models: dict[str, nn.Module] = {"head_only": base}
    params: dict[str, int] = {"head_only": sum(p.numel() for p in base.head.parameters())}
    for name, run in runs.items():
        torch.manual_seed(s.seed)
        start = time.perf_counter()
        models[name] = run()
        seconds[name] = time.perf_counter() - start
        params[name] = trainable(models[name])
    for name, model in models.items():
        model.eval()
        per: dict[str, Any] = {}
        pooled_y: list[torch.Tensor] = []
        pooled_p: list[torch.Tensor] = []
        for domain, (x, y) in data.golden.items():
            x, y = x[: s.acc_golden_per_domain], y[: s.acc_golden_per_domain]
            pred = predict(model, tok, x, max_length=s.max_length)  # type: ignore[arg-type]
            sc = scores(torch.tensor(y), pred, LABELS)
            per[domain] = {"accuracy": sc.accuracy, "macro_f1": sc.macro_f1, "rows": len(y)}
            pooled_y.append(torch.tensor(y))
            pooled_p.append(pred)
        targets = scores(torch.cat(pooled_y), torch.cat(pooled_p), LABELS)
        keep = [
            d != "nfl" for d, (x, _) in data.golden.items() for _ in x[: s.acc_golden_per_domain]
        ]
        mask = torch.tensor(keep)
        no_nfl = scores(torch.cat(pooled_y)[mask], torch.cat(pooled_p)[mask], LABELS)
        results[name] = {
            "targets": {"accuracy": targets.accuracy, "macro_f1": targets.macro_f1},
            "targets_without_nfl": {"accuracy": no_nfl.accuracy, "macro_f1": no_nfl.macro_f1},
            "domains": per,
            "trainable_params": params[name],
            "trainable_share": params[name] / m.base_params,
            "train_seconds": seconds[name],
        }
    return {
        "train_rows": len(texts),
        "epochs": 1,
        "golden_rows": sum(min(len(x), s.acc_golden_per_domain) for x, _ in data.golden.values()),
        "methods": results,
        "note": "one seed; ENVIRONMENT.md measures a seed-to-seed spread of 0.04–0.07 macro-F1",
    }


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` and count the bytes autograd saves for backward (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def section_memory(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """Memory a training step holds beyond the weights: activations saved for backward,
    gradients and AdamW state (counted tensor by tensor: the CPU allocator reports no peak)."""
    dev = m.device
    texts, labels = data.demo_train[: s.batch_size], data.demo_labels[: s.batch_size]
    batch = to(tokenise(m.tokenizer, texts, s.max_length), dev)
    batch["rows"] = torch.arange(len(texts), device=dev)
    y = torch.tensor(labels, device=dev)
    out: dict[str, Any] = {}
    up = m.mlra(upper_targets())
    cache = build_cache(up, m.tokenizer, texts, s, dev)
    cases = {
        "mlra_qv": (m.mlra(), plain_logits),
        "peft_qv": (m.peft(), plain_logits),
        "full_ft": (m.full(), plain_logits),
        "mlra_upper_cached": (up, cached_logits(up, cache)),
        "peft_upper": (m.peft(upper_targets()), plain_logits),
    }
    for name, (model, fn) in cases.items():
        opt = optimiser_for(model, s, full=name == "full_ft")
        logits, saved = saved_tensor_bytes(lambda model=model, fn=fn: fn(model, batch))
        nn.functional.cross_entropy(logits, y).backward()
        grads = sum(
            p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None
        )
        opt.step()
        state = sum(
            v.numel() * v.element_size()
            for st in opt.state.values()
            for v in st.values()
            if torch.is_tensor(v)
        )
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        total = weights + saved + grads + state
        out[name] = {
            "weights": weights,
            "saved_activations": saved,
            "grads": grads,
            "optimizer_state": state,
            "total": total,
        }
        if name == "mlra_upper_cached":
            out[name]["cache_bytes_per_row"] = cache.nbytes / len(texts)
        opt.zero_grad(set_to_none=True)
    for name in out:
        out[name]["ratio_vs_peft_qv"] = out[name]["total"] / out["peft_qv"]["total"]
        out[name]["ratio_vs_full_ft"] = out[name]["total"] / out["full_ft"]["total"]
    return {"batch": {"rows": len(texts), "width": int(batch["input_ids"].shape[1])}, "bytes": out}


def section_inference(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """A no-grad forward of one batch: base vs mlra merged / unmerged vs PEFT unmerged."""
    import mlra

    dev = m.device
    texts = [t for x, _ in data.golden.values() for t in x][: s.batch_size]
    batch = to(tokenise(m.tokenizer, texts, s.max_length), dev)
    base = m.plain().eval()
    merged, unmerged, peft_model = m.mlra(), m.mlra(), m.peft()
    for model in (merged, unmerged, peft_model):
        nudge_adapters(model)
        model.eval()
    mlra.merge(merged)

    def fwd(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                plain_logits(model, batch)

        return run

    times = interleaved(
        {
            "base": fwd(base),
            "mlra_merged": fwd(merged),
            "mlra_unmerged": fwd(unmerged),
            "peft_unmerged": fwd(peft_model),
        },
        s.infer_rounds,
        dev,
    )
    return {
        "batch": {"rows": len(texts), "width": int(batch["input_ids"].shape[1])},
        "vs_base": ratios(times, "base"),
        "mlra_unmerged_vs_peft_unmerged": ratio_between(times, "mlra_unmerged", "peft_unmerged"),
    }


def section_route(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """A batch mixing 8 adapters: mlra.route in one pass vs 8 single-adapter batches vs PEFT's
    ``adapter_names``; at the benchmark batch size and at one row per adapter."""
    import mlra

    dev = m.device
    names = [f"a{i}" for i in range(8)]
    ours = m.mlra(names=names)
    theirs = m.peft(names=names)
    base = m.plain().eval()
    for model in (ours, theirs):
        nudge_adapters(model)
        model.eval()
    texts_all = [t for x, _ in data.golden.values() for t in x]
    out: dict[str, Any] = {}
    for rows in sorted({8, max(8, s.batch_size - s.batch_size % 8)}):
        texts = texts_all[:rows]
        per_row = [names[i % 8] for i in range(rows)]
        batch = to(tokenise(m.tokenizer, texts, s.max_length), dev)
        groups = {n: [i for i, r in enumerate(per_row) if r == n] for n in names}
        sub = {
            n: to(tokenise(m.tokenizer, [texts[i] for i in g], s.max_length), dev)
            for n, g in groups.items()
        }

        def routed(batch: dict[str, torch.Tensor] = batch, per_row: list[str] = per_row) -> None:
            with torch.no_grad(), mlra.route(ours, per_row):
                plain_logits(ours, batch)

        def sequential(sub: dict[str, dict[str, torch.Tensor]] = sub) -> None:
            with torch.no_grad():
                for n, b in sub.items():
                    mlra.set_active(ours, n)
                    plain_logits(ours, b)

        def peft_mixed(
            batch: dict[str, torch.Tensor] = batch, per_row: list[str] = per_row
        ) -> None:
            with torch.no_grad():
                theirs(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    adapter_names=per_row,
                )

        def base_fwd(batch: dict[str, torch.Tensor] = batch) -> None:
            with torch.no_grad():
                plain_logits(base, batch)

        times = interleaved(
            {
                "mlra_route": routed,
                "mlra_sequential_8": sequential,
                "peft_adapter_names": peft_mixed,
                "base_forward": base_fwd,
            },
            s.route_rounds,
            dev,
        )
        out[f"rows_{rows}"] = {
            "rows": rows,
            "vs_route": ratios(times, "mlra_route"),
            "speedup_route_vs_sequential": ratio_between(times, "mlra_sequential_8", "mlra_route"),
            "speedup_route_vs_peft": ratio_between(times, "peft_adapter_names", "mlra_route"),
        }
    mlra.set_active(ours, names[0])
    return out


def section_artifact(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """Adapter artifact size vs the base model's weights file; save and load-and-verify time vs
    saving / loading the base model's weights (safetensors) in the same run."""
    import safetensors.torch

    import mlra
    from mlra.base_model import base_model_path

    model = m.mlra()
    nudge_adapters(model)
    fresh = m.plain()
    base_file = base_model_path() / "model.safetensors"
    tmp = Path(tempfile.mkdtemp(prefix="mlra-bench-"))
    try:
        counter = iter(range(10**6))
        state = {k: v.detach().contiguous() for k, v in m.pristine.encoder.state_dict().items()}

        def save() -> None:
            mlra.save_adapter(
                model,
                "a",
                tmp / "adapter",
                modules_to_save=["head"],
                overwrite=True,
                metadata={"bench": next(counter)},
            )

        def save_base() -> None:
            safetensors.torch.save_file(state, str(tmp / "base.safetensors"))

        def load() -> None:
            if "a" in mlra.adapter_names(fresh):
                mlra.remove_adapter(fresh, "a")
            mlra.load_adapter(fresh, tmp / "adapter", strict=True)

        def load_base() -> None:
            safetensors.torch.load_file(str(base_file))

        save()
        saves = interleaved({"base_save": save_base, "adapter_save": save}, s.artifact_rounds)
        loads = interleaved(
            {"base_load": load_base, "adapter_load_verify": load}, s.artifact_rounds
        )
        size = sum(f.stat().st_size for f in (tmp / "adapter").iterdir())
        tensors = (tmp / "adapter" / "adapter_model.safetensors").stat().st_size
        return {
            "adapter_bytes": size,
            "adapter_tensor_bytes": tensors,
            "base_model_bytes": base_file.stat().st_size,
            "size_ratio": size / base_file.stat().st_size,
            "save": ratios(saves, "base_save"),
            "load_verify": ratios(loads, "base_load"),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def section_gpu(m: Models, data: Data, s: Settings) -> dict[str, Any]:
    """The training steps on a CUDA GPU with bf16 autocast: samples/s, share of the chip's bf16
    rate (FLOPs counted by torch's FlopCounterMode), peak GPU memory per method."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine"}
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device("cuda")
    gm = Models(s, dev)
    texts, labels = data.demo_train[: s.batch_size], data.demo_labels[: s.batch_size]
    batch = to(tokenise(gm.tokenizer, texts, s.max_length), dev)
    batch["rows"] = torch.arange(len(texts), device=dev)
    y = torch.tensor(labels, device=dev)
    name_gpu = torch.cuda.get_device_name()
    peak_rate = H200_BF16_DENSE_FLOPS if "H200" in name_gpu or "H100" in name_gpu else None
    results: dict[str, Any] = {"device": name_gpu, "peak_bf16_flops": peak_rate}
    makers: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
        "forward_only": lambda: (gm.plain().eval(), None),
        "peft_qv": lambda: (gm.peft(), plain_logits),
        "mlra_qv": lambda: (gm.mlra(), plain_logits),
        "full_ft": lambda: (gm.full(), plain_logits),
    }
    fns: dict[str, Callable[[], None]] = {}
    for name, make in makers.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        model, logits_fn = make()
        if logits_fn is None:

            def fwd(model: nn.Module = model) -> None:
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    plain_logits(model, batch)

            fn = fwd
        else:
            opt = optimiser_for(model, s, full=name == "full_ft")

            def fn(model: nn.Module = model, opt: Any = opt, lf: Any = logits_fn) -> None:
                train_step(model, opt, batch, y, lf, autocast=torch.bfloat16)

        with FlopCounterMode(display=False) as counter:
            fn()
        for _ in range(3):
            fn()
        torch.cuda.synchronize(dev)
        results[name] = {
            "flops_per_step": counter.get_total_flops(),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(dev),
        }
        fns[name] = fn
    times = interleaved(
        {k: (lambda f=f: [f() for _ in range(10)]) for k, f in fns.items()},
        max(3, s.gpu_steps // 10),
        dev,
        warmup=0,
    )
    table = ratios(times, "peft_qv")
    for name in fns:
        step = table[name]["seconds"]["median"] / 10
        results[name].update(
            seconds_per_step=step,
            samples_per_s=len(texts) / step,
            ratio_vs_peft=table[name]["ratio"],
            flops_share=(results[name]["flops_per_step"] / step / peak_rate) if peak_rate else None,
        )
    return results


RUNNERS: dict[str, Callable[[Models, Data, Settings], dict[str, Any]]] = {
    "steps": section_steps,
    "epoch": section_epoch,
    "accuracy": section_accuracy,
    "memory": section_memory,
    "inference": section_inference,
    "route": section_route,
    "artifact": section_artifact,
    "gpu": section_gpu,
}


# -- the report -----------------------------------------------------------------------------------


def _r(x: dict[str, Any]) -> str:
    """A ratio with its spread: ``0.62× (0.60–0.65)`` — median (q1–q3)."""
    r = x.get("ratio", x)
    return f"{r['median']:.2f}× ({r['q1']:.2f}–{r['q3']:.2f})"


def targets_table(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, met, note) rows from the results that exist."""
    rows: list[tuple[str, str, str, str]] = []

    def ok(cond: bool) -> str:
        return "met" if cond else "**not met**"

    if "epoch" in res:
        e = res["epoch"]["one_epoch_qv"]["mlra_qv"]["ratio"]["median"]
        rows.append(
            (
                "one epoch of the demo data ≤ 0.8× PEFT (q/v, all layers)",
                f"{e:.2f}×",
                ok(e <= 0.8),
                "length buckets vs shuffled batches",
            )
        )
        u = res["epoch"]["upper_layers"]["two_epochs"]["ratio"]["median"]
        rows.append(
            (
                "two epochs, adapters in layers 3–5: mlra cached vs PEFT",
                f"{u:.2f}×",
                ok(u <= 0.8),
                "frozen-prefix cache + buckets",
            )
        )
    if "steps" in res:
        st = res["steps"]
        a = st["vs_peft"]["mlra_qv"]["ratio"]["median"]
        b = st["pairs"]["mlra_qv_dropout_on_vs_peft_qv"]["ratio"]["median"]
        c = st["pairs"]["mlra_upper_cached_vs_peft_upper"]["ratio"]["median"]
        rows.append(
            (
                "no step slower than PEFT's (same batch)",
                f"q/v {a:.2f}×; q/v dropout on {b:.2f}×; upper cached {c:.2f}×",
                ok(max(a, b, c) <= 1.0),
                "median per-round ratio",
            )
        )
        f = st["vs_forward_only"]["mlra_qv"]["ratio"]["median"]
        g = st["vs_forward_only"]["mlra_upper_cached"]["ratio"]["median"]
        rows.append(
            (
                "a step ≤ 2.2× forward-only",
                f"q/v all layers {f:.2f}×; upper cached {g:.2f}×",
                ok(f <= 2.2),
                "met only by the upper-cached step" if g <= 2.2 < f else "",
            )
        )
    if "accuracy" in res:
        meth = res["accuracy"]["methods"]
        full = meth["full_ft"]["targets"]["accuracy"]
        best = max(("mlra_qv", "mlra_upper_cached"), key=lambda k: meth[k]["targets"]["accuracy"])
        mine = meth["mlra_qv"]["targets"]["accuracy"]
        share = meth["mlra_qv"]["trainable_share"]
        rows.append(
            (
                "accuracy within 1 point of full FT at ≤ 1% trainable",
                f"mlra q/v {100 * mine:.1f}% vs full FT {100 * full:.1f}% "
                f"({100 * (mine - full):+.1f} pt; best mlra: {best}); "
                f"{100 * share:.2f}% trainable",
                ok(mine >= full - 0.01 and share <= 0.01),
                "one seed, small budget",
            )
        )
    if "inference" in res:
        i = res["inference"]["vs_base"]["mlra_merged"]["ratio"]["median"]
        rows.append(
            (
                "merged inference overhead ≤ 2%",
                f"{100 * (i - 1):+.1f}%",
                ok(i <= 1.02),
                "median per-round ratio to the base",
            )
        )
    if "route" in res:
        parts = []
        best_speed = 0.0
        for r in res["route"].values():
            sp = r["speedup_route_vs_sequential"]["ratio"]["median"]
            best_speed = max(best_speed, sp)
            parts.append(f"{r['rows']} rows: {sp:.2f}×")
        rows.append(
            (
                "mixed batch of 8 adapters ≥ 3× faster than 8 sequential batches",
                "; ".join(parts),
                ok(
                    min(
                        r["speedup_route_vs_sequential"]["ratio"]["median"]
                        for r in res["route"].values()
                    )
                    >= 3.0
                ),
                "CPU: a small batch costs little more per row than a large one",
            )
        )
    if "artifact" in res:
        a = res["artifact"]["size_ratio"]
        rows.append(
            (
                "artifact ≤ 1% of the base model",
                f"{100 * a:.2f}%",
                ok(a <= 0.01),
                "adapter + head + manifest",
            )
        )
    return rows


def markdown(res: dict[str, Any], mach: dict[str, Any], seconds: float, settings: Settings) -> str:
    lines = [
        f"Machine: {mach['cpu']}, {mach['cores']} cores, torch threads {mach['torch_threads']}, "
        f"{mach.get('memory_gib')} GiB; torch {mach['torch']}, peft {mach.get('peft')}, "
        f"transformers {mach.get('transformers')}. Load average before "
        f"{', '.join(f'{x:.2f}' for x in mach.get('loadavg_before', []))}, after "
        f"{', '.join(f'{x:.2f}' for x in mach['loadavg'])} (a shared machine: compare ratios, "
        f"not seconds). Run time {seconds / 60:.1f} min. Batch {settings.batch_size}, max length "
        f"{settings.max_length}, rank {settings.rank}, fp32 on CPU.",
        "",
        "Ratios are medians of per-round ratios, (q1–q3) their quartiles; lower is faster "
        "unless it says speed-up.",
        "",
    ]
    lines += ["### Targets", "", "| target | measured | | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets_table(res)]
    if "steps" in res:
        st = res["steps"]
        lines += [
            "",
            f"### 1. Training step (one batch of {st['batch']['rows']} rows, width "
            f"{st['batch']['width']})",
            "",
            "| method | s/step (median) | vs PEFT q/v | vs forward-only |",
            "|---|---|---|---|",
        ]
        for name, r in st["vs_peft"].items():
            lines.append(
                f"| {name} | {r['seconds']['median']:.3f} | {_r(r)} | "
                f"{_r(st['vs_forward_only'][name])} |"
            )
        p = st["pairs"]["mlra_upper_cached_vs_peft_upper"]
        lines.append(
            f"\nSame targets (q/v of layers 3–5): mlra cached / PEFT = {_r(p)}. Trainable "
            f"parameters: {st['trainable_params']}."
        )
    if "epoch" in res:
        e = res["epoch"]
        pad = e["padding"]
        lines += [
            "",
            f"### Epochs over the demo data ({e['rows']} apple train rows, batch "
            f"{e['batch_size']})",
            "",
            "| comparison | mlra / PEFT |",
            "|---|---|",
            f"| one epoch, q/v on all layers (mlra defaults: length buckets) | "
            f"{_r(e['one_epoch_qv']['mlra_qv'])} |",
            f"| two epochs, q/v on layers 3–5 (cache reused in epoch 2) | "
            f"{_r(e['upper_layers']['two_epochs'])} |",
            "",
            f"Padded tokens per real token: shuffled batches {pad['random_batches']:.2f}, "
            f"mlra's length buckets {pad['length_buckets']:.2f} (mean "
            f"{pad['mean_tokens']:.1f} tokens per tweet).",
        ]
    if "accuracy" in res:
        a = res["accuracy"]
        lines += [
            "",
            f"### 2. Accuracy after one epoch on {a['train_rows']} target-domain rows "
            f"({a['golden_rows']} golden rows; {a['note']})",
            "",
            "| method | trainable | targets acc | targets macro-F1 | without NFL macro-F1 "
            "| train s |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in a["methods"].items():
            lines.append(
                f"| {name} | {100 * r['trainable_share']:.2f}% | "
                f"{r['targets']['accuracy']:.3f} | {r['targets']['macro_f1']:.3f} | "
                f"{r['targets_without_nfl']['macro_f1']:.3f} | "
                f"{r['train_seconds']:.0f} |"
            )
    if "memory" in res:
        mem = res["memory"]["bytes"]
        lines += [
            "",
            "### 3. Training memory (weights + saved activations + grads + AdamW state, one step)",
            "",
            "| method | total MB | activations MB | vs PEFT q/v | vs full FT |",
            "|---|---|---|---|---|",
        ]
        for name, r in mem.items():
            lines.append(
                f"| {name} | {r['total'] / 1e6:.0f} | {r['saved_activations'] / 1e6:.0f} "
                f"| {r['ratio_vs_peft_qv']:.2f}× | {r['ratio_vs_full_ft']:.2f}× |"
            )
    if "inference" in res:
        inf = res["inference"]
        lines += [
            "",
            f"### 4. Inference (no-grad forward, {inf['batch']['rows']} rows)",
            "",
            "| model | vs base |",
            "|---|---|",
        ]
        for name, r in inf["vs_base"].items():
            lines.append(f"| {name} | {_r(r)} |")
        lines.append(
            f"\nmlra unmerged / PEFT unmerged: {_r(inf['mlra_unmerged_vs_peft_unmerged'])}."
        )
    if "route" in res:
        lines += [
            "",
            "### 5. A batch mixing 8 adapters",
            "",
            "| rows | 8 sequential / route | PEFT adapter_names / route | base forward / route |",
            "|---|---|---|---|",
        ]
        for r in res["route"].values():
            lines.append(
                f"| {r['rows']} | {_r(r['speedup_route_vs_sequential'])} | "
                f"{_r(r['speedup_route_vs_peft'])} | "
                f"{_r(r['vs_route']['base_forward'])} |"
            )
    if "artifact" in res:
        art = res["artifact"]
        save_ms = art["save"]["adapter_save"]["seconds"]["median"] * 1e3
        load_ms = art["load_verify"]["adapter_load_verify"]["seconds"]["median"] * 1e3
        lines += [
            "",
            "### 6. The artifact",
            "",
            f"{art['adapter_bytes'] / 1e3:.0f} kB (tensors {art['adapter_tensor_bytes'] / 1e3:.0f} "
            f"kB) = {100 * art['size_ratio']:.2f}% of the base model's "
            f"{art['base_model_bytes'] / 1e6:.1f} MB. Save: {_r(art['save']['adapter_save'])} "
            f"of saving the base weights ({save_ms:.0f} ms); load + verify (hashes, base "
            f"fingerprint): {_r(art['load_verify']['adapter_load_verify'])} of loading the base "
            f"weights ({load_ms:.0f} ms).",
        ]
    gpu = res.get("gpu", {"skipped": "not run"})
    lines += ["", "### 7. GPU", ""]
    if "skipped" in gpu:
        lines.append(f"Skipped: {gpu['skipped']}.")
    else:
        lines += [
            f"{gpu['device']}, bf16 autocast.",
            "",
            "| method | samples/s | vs PEFT | share of bf16 peak | peak GPU MB |",
            "|---|---|---|---|---|",
        ]
        for name in ("forward_only", "peft_qv", "mlra_qv", "full_ft"):
            g = gpu[name]
            share = f"{100 * g['flops_share']:.1f}%" if g["flops_share"] is not None else "n/a"
            lines.append(
                f"| {name} | {g['samples_per_s']:.0f} | {g['ratio_vs_peft']['median']:.2f}× "
                f"| {share} | {g['peak_memory_bytes'] / 1e6:.0f} |"
            )
    return "\n".join(lines) + "\n"


def write_readme(table: str) -> None:
    text = README.read_text() if README.is_file() else ""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + table + end + rest.split(end, 1)[1]
    else:
        text += f"\n{start}\n{table}{end}\n"
    README.write_text(text)


# -- entry point ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(
    settings: Settings,
    sections: Sequence[str],
    out_dir: Path,
    *,
    readme: bool = False,
    log: Callable[[str], None] = print,
    data: Data | None = None,
) -> dict[str, Any]:
    """Run ``sections``; write ``out_dir/<section>.json``, ``machine.json``, ``results.md``."""
    from mlra._env import apply_runtime_defaults

    apply_runtime_defaults()
    torch.set_num_threads(settings.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu = torch.device("cpu")
    with _quiet():
        models = Models(settings, cpu)
        data = data or load_data()
    results: dict[str, Any] = {}
    section_seconds: dict[str, float] = {}
    for name in sections:
        clock = time.perf_counter()
        log(f"[bench] {name} …")
        with _quiet():
            torch.manual_seed(settings.seed)
            results[name] = RUNNERS[name](models, data, settings)
        section_seconds[name] = time.perf_counter() - clock
        (out_dir / f"{name}.json").write_text(json.dumps(results[name], indent=1) + "\n")
        log(f"[bench] {name}: {section_seconds[name]:.0f} s")
    seconds = time.perf_counter() - started
    mach = machine(load_before)
    mach.update(
        settings=dataclasses.asdict(settings),
        total_seconds=seconds,
        section_seconds=section_seconds,
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    (out_dir / "machine.json").write_text(json.dumps(mach, indent=1) + "\n")
    table = markdown(results, mach, seconds, settings)
    (out_dir / "results.md").write_text(table)
    if readme:
        write_readme(table)
    return {"machine": mach, "results": results, "markdown": table}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (1–2 min): a smoke run into .mlra/bench-quick",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set batch_size=4",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    for item in args.set:
        key, _, value = item.partition("=")
        kind = type(getattr(settings, key))
        settings = dataclasses.replace(settings, **{key: kind(value)})
    sections = [x for x in args.sections.split(",") if x]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    out = args.out or (ROOT / ".mlra" / "bench-quick" if args.quick else RESULTS)
    result = run(settings, sections, out, readme=not args.quick and args.out is None)
    print(result["markdown"])
    print(f"[bench] results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
