"""Section 2: accuracy on the target-domain golden rows after one epoch, every method starting
from the same head-only head. A smoke check on this budget, not a ranking (one seed)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from benchmarks.harness import Section
from benchmarks.workloads import (
    Context,
    mlra_epochs,
    optimiser_for,
    peft_epoch,
    trainable,
    upper_targets,
)


def measure(ctx: Context) -> dict[str, Any]:
    """Every method from the same head (head-only: L-BFGS on frozen embeddings of the training
    rows), then one epoch over the same rows; golden-set scores per target domain."""
    from mlra.classifier import embed_texts, fit_head, predict
    from mlra.data import LABELS
    from mlra.metrics import scores

    m, s, data = ctx.models, ctx.settings, ctx.data
    dev, tok = m.device, m.tokenizer
    texts: list[str] = []
    labels: list[int] = []
    for x, y in data.train.values():
        texts += x[: s.acc_rows_per_domain]
        labels += y[: s.acc_rows_per_domain]
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

    def trained(model: nn.Module, full: bool = False) -> nn.Module:
        """One epoch of the PEFT-style loop (PEFT's LoRA, or full fine-tuning) with a head."""
        model = with_head(model)
        optimiser = optimiser_for(model, s, full=full)
        seed = torch.Generator().manual_seed(s.seed)
        peft_epoch(model, optimiser, tok, texts, labels, s, seed, dev)
        return model

    def run_peft() -> nn.Module:
        return trained(m.peft())

    def run_full() -> nn.Module:
        return trained(m.full(), full=True)

    def run_mlra(targets: Sequence[str], cache: bool) -> Callable[[], nn.Module]:
        def run() -> nn.Module:
            model = with_head(m.mlra(targets))
            mlra_epochs(
                model, optimiser_for(model, s), tok, texts, labels, s, s.seed, dev, cache=cache
            )
            return model

        return run

    runs: dict[str, Callable[[], nn.Module]] = {
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


def report(a: dict[str, Any]) -> list[str]:
    lines = [
        f"### 2. Accuracy after one epoch on {a['train_rows']} target-domain rows "
        f"({a['golden_rows']} golden rows; {a['note']})",
        "",
        "Measures: accuracy and macro-F1 on the golden rows of the target domains, pooled; "
        "trainable parameters as a share of the base model's; wall seconds of the training.",
        "",
        "| method | trainable | targets acc | targets macro-F1 | without NFL macro-F1 | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in a["methods"].items():
        lines.append(
            f"| {name} | {100 * r['trainable_share']:.2f}% | "
            f"{r['targets']['accuracy']:.3f} | {r['targets']['macro_f1']:.3f} | "
            f"{r['targets_without_nfl']['macro_f1']:.3f} | "
            f"{r['train_seconds']:.0f} |"
        )
    return lines


SECTION = Section("accuracy", measure, report)
