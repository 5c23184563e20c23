"""Section 7: the training steps on a CUDA GPU with bf16 autocast (skipped without one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.harness import Section, interleaved, ratios
from benchmarks.workloads import (
    Context,
    Models,
    optimiser_for,
    plain_logits,
    to,
    tokenise,
    train_step,
)

H200_BF16_DENSE_FLOPS = 989e12  # an H200's (and H100's) dense bf16 rate, FLOP/s


def measure(ctx: Context) -> dict[str, Any]:
    """The training steps on a CUDA GPU with bf16 autocast: samples/s, share of the chip's bf16
    rate (FLOPs counted by torch's FlopCounterMode), peak GPU memory per method."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine"}
    from torch.utils.flop_counter import FlopCounterMode

    s, data = ctx.settings, ctx.data
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


def report(gpu: dict[str, Any]) -> list[str]:
    lines = ["### 7. GPU", ""]
    if "skipped" in gpu:
        return [*lines, f"Skipped: {gpu['skipped']}."]
    lines += [
        f"{gpu['device']}, bf16 autocast.",
        "",
        "Measures: training samples per second over 10 steps of the same batch; step time / "
        "PEFT's; model FLOPs per second (FlopCounterMode) as a share of the chip's dense bf16 "
        "rate; peak GPU memory allocated.",
        "",
        "| method | samples/s | step time / PEFT q/v | share of bf16 peak | peak GPU MB |",
        "|---|---|---|---|---|",
    ]
    for name in ("forward_only", "peft_qv", "mlra_qv", "full_ft"):
        g = gpu[name]
        share = f"{100 * g['flops_share']:.1f}%" if g["flops_share"] is not None else "n/a"
        lines.append(
            f"| {name} | {g['samples_per_s']:.0f} | {g['ratio_vs_peft']['median']:.2f}× "
            f"| {share} | {g['peak_memory_bytes'] / 1e6:.0f} |"
        )
    return lines


SECTION = Section("gpu", measure, report)
