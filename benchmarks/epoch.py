"""Epochs over the demo data (apple train rows): mlra's training loop (length buckets, the
frozen-prefix cache) against the standard PEFT loop (shuffled batches padded to their longest)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from benchmarks.harness import Section, fmt_ratio, interleaved, ratio_between, ratios, spread
from benchmarks.workloads import Context, mlra_epochs, optimiser_for, peft_epoch, upper_targets


def measure(ctx: Context) -> dict[str, Any]:
    m, s, data, dev = ctx.models, ctx.settings, ctx.data, ctx.device
    texts, labels = data.demo_train[: s.epoch_rows], data.demo_labels[: s.epoch_rows]
    mlra_qv, peft_qv = m.mlra(), m.peft()
    mlra_up, peft_up = m.mlra(upper_targets()), m.peft(upper_targets())
    opts = {id(x): optimiser_for(x, s) for x in (mlra_qv, peft_qv, mlra_up, peft_up)}
    gen = torch.Generator().manual_seed(s.seed)
    tok = m.tokenizer
    counter = itertools.count()

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
    return {
        "rows": len(texts),
        "batch_size": s.batch_size,
        "one_epoch_qv": ratios(one, "peft_qv"),
        "upper_layers": {
            "two_epochs": ratio_between(two, "mlra_upper_cached_2ep", "peft_upper_2ep"),
            "seconds": {k: spread(v) for k, v in two.items()},
        },
        "padding": padding_stats([len(x) for x in ids], s.batch_size, s.seed),
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


def report(e: dict[str, Any]) -> list[str]:
    pad = e["padding"]
    return [
        f"### Epochs over the demo data ({e['rows']} apple train rows, batch {e['batch_size']})",
        "",
        "Measures: wall time of whole epochs (tokenising, batching and every training step), "
        "mlra's loop divided by the standard PEFT loop over the same rows.",
        "",
        "| comparison | epoch time mlra / PEFT |",
        "|---|---|",
        f"| one epoch, q/v on all layers (mlra defaults: length buckets) | "
        f"{fmt_ratio(e['one_epoch_qv']['mlra_qv'])} |",
        f"| two epochs, q/v on layers 3–5 (cache reused in epoch 2) | "
        f"{fmt_ratio(e['upper_layers']['two_epochs'])} |",
        "",
        f"Padded tokens per real token: shuffled batches {pad['random_batches']:.2f}, "
        f"mlra's length buckets {pad['length_buckets']:.2f} (mean "
        f"{pad['mean_tokens']:.1f} tokens per tweet).",
    ]


SECTION = Section("epoch", measure, report)
