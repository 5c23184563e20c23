"""Section 5: a batch mixing 8 adapters: ``mlra.route`` in one pass against 8 single-adapter
batches, PEFT's ``adapter_names`` and a plain base forward."""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.harness import Section, fmt_ratio, interleaved, ratio_between, ratios
from benchmarks.workloads import Context, nudge_adapters, plain_logits, to, tokenise


def measure(ctx: Context) -> dict[str, Any]:
    """A batch mixing 8 adapters: mlra.route in one pass vs 8 single-adapter batches vs PEFT's
    ``adapter_names``; at the benchmark batch size and at one row per adapter."""
    import mlra

    m, s, data, dev = ctx.models, ctx.settings, ctx.data, ctx.device
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


def report(res: dict[str, Any]) -> list[str]:
    lines = [
        "### 5. A batch mixing 8 adapters",
        "",
        "Measures: wall time of each way of serving the same rows, divided by one "
        "`mlra.route` pass (above 1: route is faster).",
        "",
        "| rows | 8 sequential batches / route | PEFT adapter_names / route "
        "| base forward / route |",
        "|---|---|---|---|",
    ]
    for r in res.values():
        lines.append(
            f"| {r['rows']} | {fmt_ratio(r['speedup_route_vs_sequential'])} | "
            f"{fmt_ratio(r['speedup_route_vs_peft'])} | "
            f"{fmt_ratio(r['vs_route']['base_forward'])} |"
        )
    return lines


SECTION = Section("route", measure, report)
