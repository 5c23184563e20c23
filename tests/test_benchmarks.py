"""The benchmark harness (benchmarks/): its statistics, the targets table, the section registry,
and a tiny run on the real model.

No timing is asserted: the figures depend on the machine. What is checked is what a reader of
the results relies on: baselines divide to exactly 1, byte counts add up, every section writes its
JSON and its part of the table, a target flips at its threshold, and running one section keeps the
others' results.
"""

from __future__ import annotations

import json
import math
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from benchmarks import run as bench
from benchmarks.targets import TARGETS, targets_table
from benchmarks.workloads import Data


def test_ratios_are_per_round_medians_with_their_spread() -> None:
    times = {"base": [1.0, 2.0, 4.0], "x": [0.5, 1.0, 4.0]}
    out = harness.ratios(times, "base")
    assert out["base"]["ratio"]["median"] == 1.0
    assert out["x"]["ratio"] == {"median": 0.5, "q1": 0.5, "q3": 0.75, "min": 0.5, "max": 1.0}
    assert out["x"]["seconds"]["median"] == 1.0
    assert harness.fmt_ratio(out["x"]) == "0.50× (0.50–0.75)"


def test_interleaved_calls_every_function_each_round() -> None:
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    times = harness.interleaved(fns, rounds=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["a", "b", "c"]
    assert calls[6:9] == ["b", "c", "a"]  # the order rotates


def test_interleaved_runs_before_untimed_and_before_each_call() -> None:
    calls: list[str] = []
    times = harness.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        rounds=2,
        warmup=0,
        before={"a": lambda: (calls.append("setup"), time.sleep(0.05))},
    )
    assert calls == ["setup", "a", "b", "b", "setup", "a"]
    assert max(times["a"]) < 0.05  # the sleep in `before` is not in a's time


def results_for(section: str, value: float) -> dict[str, Any]:
    """Results in which every target of ``section`` reads ``value``."""
    r = {"ratio": {"median": value}}
    return {
        "artifact": {"size_ratio": value},
        "inference": {"vs_base": {"mlra_merged": r}},
        "route": {"rows_8": {"rows": 8, "speedup_route_vs_sequential": r}},
    }[section]


@pytest.mark.parametrize(
    ("section", "met", "missed"),
    [("artifact", 0.01, 0.0101), ("inference", 1.02, 1.03), ("route", 3.0, 2.9)],
)
def test_a_target_is_met_up_to_its_threshold(section: str, met: float, missed: float) -> None:
    (target,) = [t for t in TARGETS if t.section == section]
    assert target.met(results_for(section, met))
    assert not target.met(results_for(section, missed))
    table = targets_table({section: results_for(section, missed)})
    assert len(table) == 3 and target.goal in table[2] and "**not met**" in table[2]
    assert target.measures in table[2]  # the row says what the figure is


def test_targets_without_results_are_left_out() -> None:
    assert targets_table({}) == targets_table({"gpu": {"skipped": "no CUDA GPU"}})
    assert len(targets_table({})) == 2  # the header only
    assert {t.section for t in TARGETS} <= set(bench.sections())


def test_a_library_module_becomes_a_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/library.py (``run(quick=False) -> dict``) joins the sections when it exists;
    without a ``report`` of its own its figures are listed by key, seconds left to the JSON."""
    (tmp_path / "fake_library_bench.py").write_text(
        textwrap.dedent(
            """
            def run(quick=False):
                spread = {"median": 0.5, "q1": 0.25, "q3": 0.75}
                return {
                    "quick": quick,
                    "step": {"rows": 8, "vs_peft": {"mlra": {"seconds": spread, "ratio": spread}}},
                }
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    section = bench._library_section("fake_library_bench")
    assert section is not None and section.name == "library"
    assert section.measure(bench.Context(harness.QUICK))["quick"] is True
    result = section.measure(bench.Context(harness.Settings()))
    assert result["quick"] is False
    lines = section.report(result)
    assert "| step.vs_peft.mlra.ratio | 0.5 (0.25–0.75) |" in lines
    assert "| step.rows | 8 |" in lines and not any("seconds |" in line for line in lines)
    assert bench._library_section("no_such_module_here") is None


def test_the_library_module_when_present_is_a_section() -> None:
    known = bench.sections()
    assert list(known)[:8] == ["steps", "epoch", "accuracy", "memory", "inference", "route",
                               "artifact", "gpu"]  # fmt: skip
    has_library = (Path(bench.__file__).parent / "library.py").is_file()
    assert ("library" in known) == has_library


def test_unknown_sections_and_settings_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--section", "artifact,speed"])
    assert "unknown sections ['speed']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--set", "batch=4"])
    assert "unknown setting 'batch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--set", "batch_size=four"])
    assert "batch_size must be of type int, got 'four'" in capsys.readouterr().err


def _ratios(node: Any) -> list[float]:
    """Every ``ratio*`` number in a results tree (medians and spreads included)."""
    found: list[float] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("ratio") and isinstance(value, int | float):
                found.append(float(value))
            elif key.startswith("ratio") and isinstance(value, dict):
                found += [float(v) for v in value.values() if isinstance(v, int | float)]
            else:
                found += _ratios(value)
    return found


@pytest.mark.integration
def test_a_tiny_run_writes_json_and_a_table(tmp_path: Path) -> None:
    settings = harness.Settings(batch_size=2, infer_rounds=1, artifact_rounds=1, step_rounds=1)
    sections = ["inference", "memory", "artifact", "gpu"]
    texts = ["@apple my new phone is great", "the battery died again, awful", "it is a phone"]
    rows = (texts * 2, [2, 0, 1] * 2)
    data = Data(rows[0], rows[1], {"apple": rows, "nfl": rows}, {"apple": rows, "nfl": rows})
    result = bench.run(settings, sections, tmp_path, log=lambda _: None, data=data)
    res = result["results"]
    for name in sections:
        assert json.loads((tmp_path / f"{name}.json").read_text()) == res[name]
    ratios = _ratios(res)
    assert len(ratios) >= 10 and all(math.isfinite(r) and r > 0 for r in ratios)

    inference = res["inference"]["vs_base"]
    assert set(inference) == {"base", "mlra_merged", "mlra_unmerged", "peft_unmerged"}
    assert inference["base"]["ratio"]["median"] == 1.0  # the baseline divides by itself

    memory = res["memory"]["bytes"]
    for r in memory.values():
        parts = ("weights", "saved_activations", "grads", "optimizer_state")
        assert r["total"] == sum(r[k] for k in parts)
    assert memory["mlra_qv"]["grads"] < memory["full_ft"]["grads"] / 50  # adapters + head only
    grads = memory["mlra_qv"]["grads"]
    assert 2 * grads <= memory["mlra_qv"]["optimizer_state"] < 2.01 * grads  # AdamW m, v, step
    assert memory["peft_qv"]["ratio_vs_peft_qv"] == 1.0

    art = res["artifact"]
    assert 0 < art["adapter_tensor_bytes"] < art["adapter_bytes"] < 0.05 * art["base_model_bytes"]
    assert set(art["load"]) == {"load_adapter", "inspect_adapter", "load_base_model"}
    assert art["load"]["load_adapter"]["vs"] == "load_base_model"

    if res["gpu"].get("skipped"):
        assert res["gpu"] == {"skipped": "no CUDA GPU on this machine"}

    table = (tmp_path / "results.md").read_text()
    assert table == result["markdown"]
    for title in (
        "### Targets",
        "### 3. Training memory",
        "### 4. Inference",
        "### 6. The artifact",
    ):
        assert title in table
    assert "| artifact ≤ 1% of the base model |" in table and "### 7. GPU" in table
    assert table.count("Measures:") >= 3  # every section's figures say what they measure

    # one section again: its results are replaced, the others' kept, and the table has both
    again = bench.run(settings, ["artifact"], tmp_path, log=lambda _: None, data=data)
    assert set(again["results"]) == {"artifact"}
    assert "### 4. Inference" in again["markdown"] and "### 3. Training memory" in again["markdown"]
    measured = json.loads((tmp_path / "machine.json").read_text())["sections"]
    assert set(measured) == set(sections)
    assert measured["artifact"]["date"] >= measured["inference"]["date"]
