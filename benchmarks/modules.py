"""Section 9: modular adapters (issue 15) — one module per target domain, trained together in one
routed pass and served as a bundle with a learned router, against one shared adapter, full
fine-tuning and the source-only model; and what the routed pass costs.

Everything runs through the library as a user runs it (``train_modules``, ``train``,
``evaluate``, ``evaluate_bundle``; no MLflow, no progress bars) on the packaged data prepared by
``mlra.data.splits.prepare`` into a temporary folder (no feedback), with the budget of the issue:
``train.source_rows`` source rows + ``train.rows_per_domain`` rows per target domain, 2 epochs.

- Accuracy, over ``seeds`` seeds (each in its own folders): target macro-F1 on the golden rows
  (pooled target slice, and without NFL) and source-domain macro-F1 of the bundle (rows routed by
  its router, not by name), the shared adapter (params.yaml's settings, source replay included),
  full fine-tuning on the shared adapter's rows (the standard loop of workloads.py, from the same
  base head) and the source-only model (``evaluate``'s base); trainable parameters per module;
  the router's accuracy per domain.
- Timing (seed 0, interleaved rounds, whole calls): the routed pass of all modules vs one shared
  adapter on the same rows (``replay_rows=0``); the five modules as five separate passes vs the
  routed pass; a weekly retrain of one module vs retraining all. The modular pass keeps the frozen
  base's features in a cache (mlra.training.features): "cold" calls start without it.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import QUICK, ROOT, Section, fmt_ratio, interleaved, ratio_between, spread
from benchmarks.modules_runs import Project, accuracy_seed, base_params
from benchmarks.workloads import Context

WEEKLY = "apple"  # the module a weekly retrain touches


@dataclasses.dataclass(frozen=True)
class Sizes:
    seeds: int = 3
    rows_per_domain: int = 200  # 5 target domains: 1,000 target rows
    source_rows: int = 2000
    val_rows_per_domain: int = 60  # params.yaml's
    epochs: int = 2
    golden_per_slice: int = 300  # evaluate.max_rows_per_slice
    rounds: int = 3  # timing rounds (seed 0)
    batch_size: int = 0  # 0: params.yaml's train.batch_size
    replay_rows: int = -1  # the shared adapter's source replay rows; -1: params.yaml's


FULL = Sizes()
SMALL = Sizes(seeds=1, rows_per_domain=6, source_rows=24, val_rows_per_domain=3, epochs=1,
              golden_per_slice=6, rounds=1, batch_size=4, replay_rows=6)  # fmt: skip


def measure(ctx: Context) -> dict[str, Any]:
    """The section on the issue's budget (``--quick``: tiny sizes)."""
    return measure_sizes(ctx, SMALL if ctx.settings == QUICK else FULL)


def measure_sizes(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlra-bench-modules-") as tmp:
        project = Project.create(Path(tmp), ROOT / "params.yaml", sizes, ctx.settings)
        seeds = [accuracy_seed(project, seed) for seed in range(sizes.seeds)]
        timing = measure_timing(project, sizes.rounds)
    return {
        "sizes": dataclasses.asdict(sizes),
        "rows": project.rows,
        "base_params": base_params(),
        "accuracy": summarise(seeds),
        "seeds": seeds,
        "timing": timing,
        "gpu": "not measured: no GPU lent" if not torch.cuda.is_available() else "not measured",
    }


def summarise(seeds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, std, min and max over seeds of every figure (methods × slices, router accuracy)."""

    def stats(values: Sequence[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.pstdev(values),
                "min": min(values), "max": max(values), "n": len(values)}  # fmt: skip

    methods = seeds[0]["methods"]
    out: dict[str, Any] = {"methods": {}, "router_accuracy": {}}
    for name, figures in methods.items():
        out["methods"][name] = {
            key: stats([s["methods"][name][key] for s in seeds])
            for key, value in figures.items()
            if isinstance(value, float)
        }
        out["methods"][name]["trainable_share"] = figures["trainable_share"]
    for domain in seeds[0]["router_accuracy"]:
        out["router_accuracy"][domain] = stats([s["router_accuracy"][domain] for s in seeds])
    return out


# -- timing ---------------------------------------------------------------------------------------


def measure_timing(project: Project, rounds: int) -> dict[str, Any]:
    """Whole-call wall times, interleaved (rotating order): see the module docstring."""
    names = project.module_names
    out = project.tmp / "timing"
    cache = out / "modules" / ".cache"
    calls: dict[str, list[float]] = {f"separate_uncached.{m}": [] for m in names}
    phases: dict[str, dict[str, float]] = {}

    def modular(key: str, due: Sequence[str] | None, cached: bool = True) -> float:
        start = time.perf_counter()
        result = project.train_modules(0, out, due=due, feature_cache=cached)
        seconds = time.perf_counter() - start
        phases[key] = dict(result.seconds)
        return seconds

    def separate(cached: bool) -> Callable[[], None]:
        def run() -> None:
            for m in names:
                seconds = modular(f"separate.{m}", [m], cached)
                if not cached:
                    calls[f"separate_uncached.{m}"].append(seconds)

        return run

    def clear() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    fns: dict[str, Callable[[], object]] = {
        "shared": lambda: project.train_shared(0, out / "shared", replay_rows=0),
        "routed_cold": lambda: modular("routed_cold", None),
        "routed": lambda: modular("routed", None),  # the cache filled by the calls before
        "separate": separate(True),
        "separate_uncached": separate(False),
        "one": lambda: modular("one", [WEEKLY]),
    }
    before = {"routed_cold": clear, "separate": clear}
    times = interleaved(fns, rounds, warmup=0, before=before)
    weekly_uncached = calls[f"separate_uncached.{WEEKLY}"]
    times["one_uncached"] = weekly_uncached
    return {
        "seconds": {k: spread(v) for k, v in times.items()},
        "phases": phases,
        "routed_vs_shared": ratio_between(times, "routed_cold", "shared"),
        "routed_warm_vs_shared": ratio_between(times, "routed", "shared"),
        "separate_vs_routed": ratio_between(times, "separate", "routed_cold"),
        "separate_uncached_vs_routed": ratio_between(times, "separate_uncached", "routed_cold"),
        "one_vs_all": ratio_between(times, "one", "routed"),
        "one_vs_all_uncached": ratio_between(times, "one_uncached", "routed_cold"),
        "rounds": rounds,
        "weekly_module": WEEKLY,
    }


# -- the report -----------------------------------------------------------------------------------

METHODS = {
    "bundle": "bundle: a module per domain + router (rows routed by the router)",
    "shared": "one shared adapter (params.yaml: source replay rows included)",
    "full_ft": "full fine-tuning, same rows as the shared adapter",
    "source_only": "source-only: frozen base + base head",
}


def _mean(x: Mapping[str, float]) -> str:
    return f"{x['mean']:.3f} ({x['min']:.3f}–{x['max']:.3f})"


def report(r: dict[str, Any]) -> list[str]:
    sizes, acc, timing, rows = r["sizes"], r["accuracy"], r["timing"], r["rows"]
    lines = [
        f"### 9. Modular adapters: a module per domain, one routed pass, a bundle "
        f"({sizes['seeds']} seeds)",
        "",
        f"Budget: {rows['source']:,} source rows + {rows['targets']:,} target rows "
        f"({sizes['rows_per_domain']} per domain), {sizes['epochs']} epochs; golden rows: up to "
        f"{sizes['golden_per_slice']} per domain ({rows['golden']:,} in all); the shared adapter "
        f"and full fine-tuning also see {rows['replay']:,} source replay rows. Measures: macro-F1 "
        "on the golden rows, mean over seeds (min–max); trainable parameters per module (adapter "
        "+ head) as a share of the base model's; train s: the whole training call, mean over "
        "seeds (full fine-tuning: its epochs only, from the shared run's base head).",
        "",
        "| method | trainable | targets macro-F1 | without NFL | source (airline) macro-F1 | "
        "train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, what in METHODS.items():
        m = acc["methods"][name]
        train_s = f"{m['train_seconds']['mean']:.0f}" if "train_seconds" in m else "–"
        lines.append(
            f"| {what} | {100 * m['trainable_share']:.2f}% | {_mean(m['targets'])} | "
            f"{_mean(m['targets_without_nfl'])} | {_mean(m['source'])} | {train_s} |"
        )
    ra = acc["router_accuracy"]
    lines += [
        "",
        "Router accuracy (share of a domain's golden rows served by its own module; the base for "
        "the source domain): " + "; ".join(f"{d} {_mean(v)}" for d, v in ra.items()) + ".",
        "",
        f"Timing (seed 0, {timing['rounds']} interleaved rounds; whole calls; median of per-round "
        "ratios (q1–q3)). Cold: the feature cache emptied first; warm: filled by earlier calls.",
        "",
        "| comparison | ratio |",
        "|---|---|",
        f"| all 5 modules in one routed pass (cold) / one shared adapter on the same rows | "
        f"{fmt_ratio(timing['routed_vs_shared'])} |",
        f"| the same, routed pass warm | {fmt_ratio(timing['routed_warm_vs_shared'])} |",
        f"| 5 separate one-module passes one after another (cold start) / one routed pass (cold) "
        f"| {fmt_ratio(timing['separate_vs_routed'])} |",
        f"| 5 separate passes without the cache / one routed pass (cold) | "
        f"{fmt_ratio(timing['separate_uncached_vs_routed'])} |",
        f"| weekly retrain of one module ({timing['weekly_module']}) / retraining all, warm | "
        f"{fmt_ratio(timing['one_vs_all'])} |",
        f"| the same without the cache (cold) | {fmt_ratio(timing['one_vs_all_uncached'])} |",
        "",
        "Seconds per phase of the last call of each kind (base head = loading the base and the "
        "source rows' features; router = the router's features and fit): "
        + "; ".join(
            f"{k} " + ", ".join(f"{p} {s:.1f}" for p, s in v.items())
            for k, v in timing["phases"].items()
            if not k.startswith("separate.") or k.endswith(timing["weekly_module"])
        )
        + ".",
        "",
        f"GPU (the routed step's throughput vs one module, bf16-mixed): {r['gpu']}.",
    ]
    return lines


SECTION = Section("modules", measure, report)
