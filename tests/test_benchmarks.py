"""The benchmark harness (benchmarks/run.py): its statistics, and a tiny run on the real model.

No timing is asserted: the figures depend on the machine. What is checked is that a run writes
the JSON files and the Markdown table, and that every ratio is a positive finite number.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import run as bench  # noqa: E402


def test_ratios_are_per_round_medians_with_their_spread() -> None:
    times = {"base": [1.0, 2.0, 4.0], "x": [0.5, 1.0, 4.0]}
    out = bench.ratios(times, "base")
    assert out["base"]["ratio"]["median"] == 1.0
    assert out["x"]["ratio"] == {"median": 0.5, "q1": 0.5, "q3": 0.75, "min": 0.5, "max": 1.0}
    assert out["x"]["seconds"]["median"] == 1.0


def test_interleaved_calls_every_function_each_round() -> None:
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    times = bench.interleaved(fns, rounds=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["a", "b", "c"]
    assert calls[6:9] == ["b", "c", "a"]  # the order rotates


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
    settings = bench.Settings(batch_size=2, infer_rounds=1, artifact_rounds=1, step_rounds=1)
    sections = ["inference", "memory", "artifact", "gpu"]
    texts = ["@apple my new phone is great", "the battery died again, awful", "it is a phone"]
    rows = (texts * 2, [2, 0, 1] * 2)
    data = bench.Data(rows[0], rows[1], {"apple": rows, "nfl": rows}, {"apple": rows, "nfl": rows})
    result = bench.run(settings, sections, tmp_path, log=lambda _: None, data=data)
    for name in [*sections, "machine"]:
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert isinstance(data, dict) and data
    machine = json.loads((tmp_path / "machine.json").read_text())
    assert {"cpu", "cores", "torch_threads", "loadavg", "loadavg_before"} <= machine.keys()
    ratios = _ratios(result["results"])
    assert len(ratios) >= 10
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    inference = result["results"]["inference"]["vs_base"]
    assert set(inference) == {"base", "mlra_merged", "mlra_unmerged", "peft_unmerged"}
    assert result["results"]["artifact"]["size_ratio"] < 0.05
    table = (tmp_path / "results.md").read_text()
    assert "### Targets" in table and "merged inference overhead" in table
    assert "### 7. GPU" in table
