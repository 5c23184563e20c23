"""Section 1: one training step (forward, backward, AdamW step) on one fixed batch, per method;
the floor is the frozen forward + head without gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.harness import Section, fmt_ratio, interleaved, ratio_between, ratios
from benchmarks.workloads import (
    Context,
    build_cache,
    cached_logits,
    optimiser_for,
    plain_logits,
    to,
    tokenise,
    train_step,
    trainable,
    upper_targets,
)


def measure(ctx: Context) -> dict[str, Any]:
    m, s, data, dev = ctx.models, ctx.settings, ctx.data, ctx.device
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


def report(st: dict[str, Any]) -> list[str]:
    lines = [
        f"### 1. Training step (one batch of {st['batch']['rows']} rows, width "
        f"{st['batch']['width']})",
        "",
        "Measures: wall time of one training step (forward, cross-entropy, backward, AdamW step) "
        "on the same fixed batch; forward_only is a no-grad forward + head (the floor).",
        "",
        "| method | s/step (median) | step time / PEFT q/v step | step time / forward-only |",
        "|---|---|---|---|",
    ]
    for name, r in st["vs_peft"].items():
        lines.append(
            f"| {name} | {r['seconds']['median']:.3f} | {fmt_ratio(r)} | "
            f"{fmt_ratio(st['vs_forward_only'][name])} |"
        )
    p = st["pairs"]["mlra_upper_cached_vs_peft_upper"]
    lines.append(
        f"\nSame targets (q/v of layers 3–5), step time mlra cached / PEFT = {fmt_ratio(p)}. "
        f"Trainable parameters: {st['trainable_params']}."
    )
    return lines


SECTION = Section("steps", measure, report)
