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
        "importing mlflow's client and SQLite store is most of it",
    ),
    Target(
        "cli",
        "`mlra predict` ≤ 5 s on the embedded store",
        "median wall time of the whole process: verify the champion, load MiniLM, one text",
        lambda r: float(r["predict"]["median_s"]),
        5.0,
        "lower",
        lambda r: f"{r['predict']['median_s']:.2f} s",
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
