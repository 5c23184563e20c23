"""Section 4: inference, a no-grad forward of one batch: mlra merged and unmerged and PEFT
unmerged, each against the base model without adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.harness import Section, fmt_ratio, interleaved, ratio_between, ratios
from benchmarks.workloads import Context, nudge_adapters, plain_logits, to, tokenise


def measure(ctx: Context) -> dict[str, Any]:
    """A no-grad forward of one batch: base vs mlra merged / unmerged vs PEFT unmerged."""
    import mlra

    m, s, data, dev = ctx.models, ctx.settings, ctx.data, ctx.device
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


def report(inf: dict[str, Any]) -> list[str]:
    lines = [
        f"### 4. Inference (no-grad forward, {inf['batch']['rows']} rows)",
        "",
        "Measures: wall time of one no-grad forward of the same batch, divided by the base "
        "model's (no adapters).",
        "",
        "| model | forward time / base forward |",
        "|---|---|",
    ]
    lines += [f"| {name} | {fmt_ratio(r)} |" for name, r in inf["vs_base"].items()]
    lines.append(
        "\nForward time mlra unmerged / PEFT unmerged: "
        f"{fmt_ratio(inf['mlra_unmerged_vs_peft_unmerged'])}."
    )
    return lines


SECTION = Section("inference", measure, report)
