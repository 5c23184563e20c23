"""Section 3: training memory of one step, counted tensor by tensor: weights, activations saved
for backward (``torch.autograd.graph.saved_tensors_hooks``), gradients and AdamW state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.harness import Section
from benchmarks.workloads import (
    Context,
    build_cache,
    cached_logits,
    optimiser_for,
    plain_logits,
    to,
    tokenise,
    upper_targets,
)


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


def measure(ctx: Context) -> dict[str, Any]:
    """Memory a training step holds beyond the weights: activations saved for backward,
    gradients and AdamW state (counted tensor by tensor: the CPU allocator reports no peak)."""
    m, s, data, dev = ctx.models, ctx.settings, ctx.data, ctx.device
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


def report(res: dict[str, Any]) -> list[str]:
    mem = res["bytes"]
    lines = [
        "### 3. Training memory (weights + saved activations + grads + AdamW state, one step)",
        "",
        "Measures: bytes held during one training step of one batch, counted tensor by tensor "
        "(the CPU allocator reports no peak); ratios are of the totals.",
        "",
        "| method | total MB | saved activations MB | total / PEFT q/v | total / full FT |",
        "|---|---|---|---|---|",
    ]
    for name, r in mem.items():
        lines.append(
            f"| {name} | {r['total'] / 1e6:.0f} | {r['saved_activations'] / 1e6:.0f} "
            f"| {r['ratio_vs_peft_qv']:.2f}× | {r['ratio_vs_full_ft']:.2f}× |"
        )
    return lines


SECTION = Section("memory", measure, report)
