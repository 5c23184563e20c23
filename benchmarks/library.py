"""The adapter library on its own: torch.compile speedup, training step against PEFT, and route.

    python -m benchmarks.library           # writes benchmarks/results/library.json
    python -m benchmarks.library --quick   # fewer rounds, smaller batches (a smoke run)

- training step (MiniLM, batch 32, max length 64, r=8 on query/value of every layer, a 3-class
  head, AdamW): mlra and PEFT, eager and ``torch.compile``d; ratios taken in one run
- ``route`` with 8 adapters over a batch of 64 against the single-adapter forward of that batch
- on CUDA (the GPU script): ``route`` against PEFT's ``adapter_names`` on the same batch

Timings are interleaved (each round runs every variant, in a rotating order) and reported as
medians with quartiles; ratios are per round, then the median. ``run() -> dict`` is what
benchmarks/run.py plugs in as its ``library`` section.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).parent / "results" / "library.json"
QV = ["query", "value"]


def _timed(fns: Mapping[str, Callable[[], object]], rounds: int, device: torch.device) -> dict[
    str, list[float]
]:  # fmt: skip
    """Seconds per call of each function, interleaved with a rotating order, after one warm-up."""
    names = list(fns)
    for name in names:
        fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fns[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def _summary(times: Mapping[str, Sequence[float]], baseline: str) -> dict[str, Any]:
    def quartiles(values: Sequence[float]) -> dict[str, float]:
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        return {"median": statistics.median(values), "q1": q[0], "q3": q[2]}

    return {
        name: {
            "seconds": quartiles(values) | {"min": min(values)},
            f"ratio_to_{baseline}": quartiles(
                [v / b for v, b in zip(values, times[baseline], strict=True)]
            ),
            # best of the rounds against best of the rounds: the least disturbed by other load
            f"min_ratio_to_{baseline}": min(values) / min(times[baseline]),
        }
        for name, values in times.items()
    }


def _workload(batch: int, device: torch.device) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from mlra.base_model import load_base_model
    from mlra.data.source import load_tweets

    encoder, tokenizer = load_base_model(device=device)
    texts = load_tweets()["text"].tolist()[:batch]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=64,
                        return_tensors="pt")  # fmt: skip
    return encoder, {k: encoded[k].to(device) for k in ("input_ids", "attention_mask")}


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        out: torch.Tensor = self.head(hidden[:, 0])
        return out


def _trainers(
    encoder: nn.Module, batch: Mapping[str, torch.Tensor], compiled: bool
) -> dict[str, Callable[[], object]]:
    """One AdamW training step of mlra and of PEFT on identical copies of the model."""
    import peft

    import mlra

    labels = torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device) % 3
    torch.manual_seed(0)
    ours = _Classifier(copy.deepcopy(encoder)).to(batch["input_ids"].device).train()
    mlra.add_adapter(ours.encoder, "a", mlra.AdapterSpec(rank=8, alpha=16, targets=QV))
    ours_params = mlra.mark_trainable(ours, "a", also=["head"])
    torch.manual_seed(0)
    theirs_model = _Classifier(copy.deepcopy(encoder)).to(batch["input_ids"].device).train()
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=QV, modules_to_save=["head"])
    theirs = peft.get_peft_model(theirs_model, config)
    theirs_params = [p for p in theirs.parameters() if p.requires_grad]
    steps = {}
    for name, model, params in (("mlra", ours, ours_params), ("peft", theirs, theirs_params)):
        optimiser = torch.optim.AdamW(params, lr=1e-4)
        forward = torch.compile(model) if compiled else model

        def step(
            forward: Callable[..., torch.Tensor] = forward, optimiser: Any = optimiser
        ) -> None:
            loss = nn.functional.cross_entropy(forward(**batch), labels)
            loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)

        steps[name + ("_compiled" if compiled else "")] = step
    return steps


def training_step(rounds: int, batch_size: int, device: torch.device, compile_too: bool) -> Any:
    encoder, batch = _workload(batch_size, device)
    fns = _trainers(encoder, batch, compiled=False)
    if compile_too:
        start = time.perf_counter()
        fns |= _trainers(encoder, batch, compiled=True)
        for name in ("mlra_compiled", "peft_compiled"):
            fns[name]()  # compile here, not inside the timed warm-up
        compile_s = time.perf_counter() - start
    times = _timed(fns, rounds, device)
    out = {"batch": batch_size, "max_length": 64, "vs_peft": _summary(times, "peft")}
    if compile_too:
        out["compile_seconds_both"] = compile_s
        out["vs_peft_compiled"] = _summary(
            {k: times[k] for k in ("mlra_compiled", "peft_compiled")}, "peft_compiled"
        )
        out["compile_speedup"] = _summary(
            {k: times[k] for k in ("mlra", "mlra_compiled")}, "mlra_compiled"
        )
    return out


def route_vs_single(rounds: int, batch_size: int, device: torch.device, with_peft: bool) -> Any:
    """8 adapters over one batch via ``route`` vs the same batch through one active adapter."""
    import mlra

    encoder, batch = _workload(batch_size, device)
    names = [f"a{i}" for i in range(8)]
    ours = copy.deepcopy(encoder).eval()
    for name in names:
        mlra.add_adapter(ours, name, mlra.AdapterSpec(rank=8, alpha=16, targets=QV))
    rows = [names[i % 8] for i in range(batch_size)]

    def routed() -> None:
        with torch.no_grad(), mlra.route(ours, rows):
            ours(**batch)

    def single() -> None:
        with torch.no_grad():
            ours(**batch)

    fns: dict[str, Callable[[], object]] = {"mlra_single_adapter": single, "mlra_route_8": routed}
    if with_peft:
        import peft

        config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=QV)
        theirs = peft.get_peft_model(copy.deepcopy(encoder), config, adapter_name=names[0])
        for name in names[1:]:
            theirs.add_adapter(name, config)
        theirs.eval()

        def peft_mixed() -> None:
            with torch.no_grad():
                theirs(**batch, adapter_names=rows)

        fns["peft_adapter_names_8"] = peft_mixed
    times = _timed(fns, rounds, device)
    return {"rows": batch_size, "adapters": 8, "vs_single": _summary(times, "mlra_single_adapter"),
            "vs_route": _summary(times, "mlra_route_8")}  # fmt: skip


def run(quick: bool = False) -> dict[str, Any]:
    """Every measurement of this module, on CUDA when there is one (else CPU)."""
    from mlra._env import apply_runtime_defaults

    apply_runtime_defaults()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rounds = 3 if quick else 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result: dict[str, Any] = {
            "load_average_before": list(os.getloadavg()),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "route": route_vs_single(rounds, 16 if quick else 64, device, device.type == "cuda"),
            "training_step": training_step(rounds, 8 if quick else 32, device, compile_too=True),
        }
    result["load_average_after"] = list(os.getloadavg())
    return result


def report(result: Mapping[str, Any]) -> list[str]:
    """Markdown lines for benchmarks/run.py's table."""

    def row(label: str, entry: Mapping[str, Any], key: str) -> str:
        sec, ratio = entry["seconds"], entry[key]
        ms = f"{sec['median'] * 1000:.0f} ms ({sec['q1'] * 1000:.0f}–{sec['q3'] * 1000:.0f})"
        x = f"{ratio['median']:.3f} ({ratio['q1']:.3f}–{ratio['q3']:.3f})"
        best = f"{sec['min'] * 1000:.0f} ms, {entry['min_' + key]:.3f}"
        return f"| {label} | {ms} | {x} | {best} |"

    train, route = result["training_step"], result["route"]
    lines = [
        "### library",
        "",
        f"On {result['device']} ({result['threads']} threads), medians (quartiles) of "
        f"interleaved rounds; load average {result['load_average_before'][0]:.1f} before, "
        f"{result['load_average_after'][0]:.1f} after.",
        "",
        "| measurement | time | ratio | best time, best/best |",
        "|---|---|---|---|",
    ]
    for name, entry in train["vs_peft"].items():
        lines.append(row(f"training step: {name} (vs peft)", entry, "ratio_to_peft"))
    if "vs_peft_compiled" in train:
        for name, entry in train["vs_peft_compiled"].items():
            lines.append(row(f"training step: {name} (vs peft_compiled)", entry,
                             "ratio_to_peft_compiled"))  # fmt: skip
        lines.append(row("eager mlra step vs compiled", train["compile_speedup"]["mlra"],
                         "ratio_to_mlra_compiled"))  # fmt: skip
    for name, entry in route["vs_single"].items():
        lines.append(row(f"{route['rows']} rows: {name} (vs single adapter)", entry,
                         "ratio_to_mlra_single_adapter"))  # fmt: skip
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller batches")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
