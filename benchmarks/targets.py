"""The benchmark targets, in one table: each one figure from one section's results, compared
with one threshold. The README's Targets table is this table evaluated on the results there are."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

Results = Mapping[str, Any]  # one section's results (its JSON)


@dataclasses.dataclass(frozen=True)
class Target:
    section: str
    goal: str  # what is promised, in words
    measures: str  # what the figure is
    figure: Callable[[Results], float]  # the figure compared with the threshold
    threshold: float
    better: Literal["lower", "higher"]
    shown: Callable[[Results], str]  # the figure(s) as the table shows them
    note: str = ""

    def met(self, results: Results) -> bool:
        value = self.figure(results)
        return value <= self.threshold if self.better == "lower" else value >= self.threshold


def _median(*path: str) -> Callable[[Results], float]:
    def get(res: Results) -> float:
        node: Any = res
        for key in path:
            node = node[key]
        return float(node["ratio"]["median"])

    return get


def _x(figure: Callable[[Results], float]) -> Callable[[Results], str]:
    return lambda res: f"{figure(res):.2f}×"


_epoch_qv = _median("one_epoch_qv", "mlra_qv")
_epoch_upper = _median("upper_layers", "two_epochs")
_step_qv = _median("vs_peft", "mlra_qv")
_step_dropout = _median("pairs", "mlra_qv_dropout_on_vs_peft_qv")
_step_upper = _median("pairs", "mlra_upper_cached_vs_peft_upper")
_step_floor = _median("vs_forward_only", "mlra_qv")
_step_floor_cached = _median("vs_forward_only", "mlra_upper_cached")
_merged = _median("vs_base", "mlra_merged")


def _slowest_step(res: Results) -> float:
    return max(_step_qv(res), _step_dropout(res), _step_upper(res))


def _accuracy_gap(res: Results) -> float:
    methods = res["methods"]
    return float(
        methods["mlra_qv"]["targets"]["accuracy"] - methods["full_ft"]["targets"]["accuracy"]
    )


def _accuracy_shown(res: Results) -> str:
    methods = res["methods"]
    best = max(("mlra_qv", "mlra_upper_cached"), key=lambda k: methods[k]["targets"]["accuracy"])
    return (
        f"mlra q/v {100 * methods['mlra_qv']['targets']['accuracy']:.1f}% vs full FT "
        f"{100 * methods['full_ft']['targets']['accuracy']:.1f}% ({100 * _accuracy_gap(res):+.1f} "
        f"pt; best mlra: {best})"
    )


def _route_speedups(res: Results) -> list[tuple[int, float]]:
    return [(r["rows"], r["speedup_route_vs_sequential"]["ratio"]["median"]) for r in res.values()]


def _f1(res: Results, method: str, part: str = "targets") -> float:
    return float(res["accuracy"]["methods"][method][part]["mean"])


def _bundle_margin(res: Results) -> float:
    """Mean target macro-F1 of the bundle minus the better of the shared adapter's and full
    fine-tuning's (means over seeds)."""
    return _f1(res, "bundle") - max(_f1(res, "shared"), _f1(res, "full_ft"))


def _bundle_shown(res: Results) -> str:
    methods = res["accuracy"]["methods"]

    def cell(name: str) -> str:
        m = methods[name]["targets"]
        return f"{m['mean']:.3f} ({m['min']:.3f}–{m['max']:.3f})"

    return (
        f"bundle {cell('bundle')} vs shared {cell('shared')} vs full FT {cell('full_ft')} "
        f"({res['sizes']['seeds']} seeds)"
    )


def _source_gap(res: Results) -> float:
    return _f1(res, "bundle", "source") - _f1(res, "source_only", "source")


def _router_low(res: Results) -> tuple[str, float]:
    accuracy = res["accuracy"]["router_accuracy"]
    domain = min(accuracy, key=lambda d: accuracy[d]["mean"])
    return domain, float(accuracy[domain]["mean"])


_routed = _median("timing", "routed_vs_shared")
_separate = _median("timing", "separate_vs_routed")
_weekly = _median("timing", "one_vs_all")


TARGETS: tuple[Target, ...] = (
    Target(
        "epoch",
        "one epoch of the demo data ≤ 0.8× PEFT (q/v, all layers)",
        "epoch time, mlra / PEFT",
        _epoch_qv,
        0.8,
        "lower",
        _x(_epoch_qv),
        "length buckets vs shuffled batches",
    ),
    Target(
        "epoch",
        "two epochs, adapters in layers 3–5: mlra cached ≤ 0.8× PEFT",
        "two-epoch time, mlra / PEFT",
        _epoch_upper,
        0.8,
        "lower",
        _x(_epoch_upper),
        "frozen-prefix cache + buckets",
    ),
    Target(
        "steps",
        "no step slower than PEFT's (same batch)",
        "step time, mlra / PEFT, slowest of three",
        _slowest_step,
        1.0,
        "lower",
        lambda r: (
            f"q/v {_step_qv(r):.2f}×; q/v dropout on {_step_dropout(r):.2f}×; "
            f"upper cached {_step_upper(r):.2f}×"
        ),
        "median per-round ratio",
    ),
    Target(
        "steps",
        "a step ≤ 2.2× forward-only",
        "step time / no-grad forward time (q/v, all layers)",
        _step_floor,
        2.2,
        "lower",
        lambda r: (
            f"q/v all layers {_step_floor(r):.2f}×; upper cached {_step_floor_cached(r):.2f}×"
        ),
        "the upper-cached step is shown beside it",
    ),
    Target(
        "accuracy",
        "accuracy within 1 point of full FT",
        "target-domain golden accuracy, mlra q/v − full FT",
        _accuracy_gap,
        -0.01,
        "higher",
        _accuracy_shown,
        "one seed, small budget",
    ),
    Target(
        "accuracy",
        "≤ 1% of the parameters trainable",
        "trainable parameters of mlra q/v / base parameters",
        lambda r: float(r["methods"]["mlra_qv"]["trainable_share"]),
        0.01,
        "lower",
        lambda r: f"{100 * r['methods']['mlra_qv']['trainable_share']:.2f}%",
    ),
    Target(
        "inference",
        "merged inference overhead ≤ 2%",
        "no-grad forward time, merged / base − 1",
        _merged,
        1.02,
        "lower",
        lambda r: f"{100 * (_merged(r) - 1):+.1f}%",
        "median per-round ratio to the base",
    ),
    Target(
        "route",
        "mixed batch of 8 adapters ≥ 3× faster than 8 sequential batches",
        "time of 8 single-adapter batches / one routed batch (smallest over batch sizes)",
        lambda r: min(speed for _, speed in _route_speedups(r)),
        3.0,
        "higher",
        lambda r: "; ".join(f"{rows} rows: {speed:.2f}×" for rows, speed in _route_speedups(r)),
        "CPU: a small batch costs little more per row than a large one",
    ),
    Target(
        "artifact",
        "artifact ≤ 1% of the base model",
        "adapter folder bytes / base weights file bytes",
        lambda r: float(r["size_ratio"]),
        0.01,
        "lower",
        lambda r: f"{100 * r['size_ratio']:.2f}%",
        "adapter + head + manifest",
    ),
    Target(
        "cli",
        "`mlra status` ≤ 1 s on the embedded store",
        "median wall time of the whole process, a project with a champion (seconds)",
        lambda r: float(r["status"]["median_s"]),
        1.0,
        "lower",
        lambda r: (
            f"{r['status']['median_s']:.2f} s (fresh project {r['status_fresh']['median_s']:.2f} s)"
        ),
        "the registry read straight from SQLite, read-only; MLflow is not imported",
    ),
    Target(
        "cli",
        "`mlra predict` ≤ 5 s on the embedded store",
        "median wall time of the whole process: verify the champion, load MiniLM, one text",
        lambda r: float(r["predict"]["median_s"]),
        5.0,
        "lower",
        lambda r: f"{r['predict']['median_s']:.2f} s",
        "torch and transformers imports and the MiniLM load are most of it",
    ),
    Target(
        "modules",
        "bundle target macro-F1 ≥ shared adapter's and ≥ full FT's",
        "golden target macro-F1 (pooled), bundle − the better of the two, means over seeds",
        _bundle_margin,
        0.0,
        "higher",
        _bundle_shown,
        "rows routed by the router; mean (min–max)",
    ),
    Target(
        "modules",
        "≤ 1% trainable parameters per module",
        "adapter + head of the largest module / base parameters",
        lambda r: float(r["accuracy"]["methods"]["bundle"]["trainable_share"]),
        0.01,
        "lower",
        lambda r: f"{100 * r['accuracy']['methods']['bundle']['trainable_share']:.2f}%",
    ),
    Target(
        "modules",
        "source macro-F1 within 0.5 point of the source-only model",
        "source-domain golden macro-F1, bundle − frozen base + base head, mean over seeds",
        _source_gap,
        -0.005,
        "higher",
        lambda r: f"{100 * _source_gap(r):+.2f} pt",
        "source rows the router sends to a module are the loss",
    ),
    Target(
        "modules",
        "router accuracy ≥ 0.8 on every domain",
        "share of a domain's golden rows served by its own module, lowest domain, mean over seeds",
        lambda r: _router_low(r)[1],
        0.8,
        "higher",
        lambda r: f"{_router_low(r)[1]:.3f} ({_router_low(r)[0]})",
        "modules.router.min_accuracy",
    ),
    Target(
        "modules",
        "all due modules in one routed pass ≤ 1.3× one shared adapter on the same rows",
        "whole-call time, train_modules (all 5, cold) / train (replay 0)",
        _routed,
        1.3,
        "lower",
        _x(_routed),
        "both pay the base pass over the source rows",
    ),
    Target(
        "modules",
        "one routed pass ≥ 3× faster than the modules as separate runs",
        "5 one-module train_modules calls / one call of all 5 (both from a cold cache)",
        _separate,
        3.0,
        "higher",
        _x(_separate),
        "the same rows either way: only the fixed costs per call differ",
    ),
    Target(
        "modules",
        "a weekly retrain of one module ≤ 1/3 of retraining all",
        "whole-call time, train_modules(due=[apple]) / all 5 (feature cache warm)",
        _weekly,
        1 / 3,
        "lower",
        _x(_weekly),
        "the frozen base's features read from the cache",
    ),
)


def targets_table(results: Mapping[str, Results]) -> list[str]:
    """The Markdown table of every target whose section has results."""
    lines = [
        "| target | what is measured | measured | | note |",
        "|---|---|---|---|---|",
    ]
    for t in TARGETS:
        res = results.get(t.section)
        if res is None or "skipped" in res:
            continue
        met = "met" if t.met(res) else "**not met**"
        lines.append(f"| {t.goal} | {t.measures} | {t.shown(res)} | {met} | {t.note} |")
    return lines
