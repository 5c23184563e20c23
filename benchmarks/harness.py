"""What every section shares: settings, interleaved timing, statistics, the machine, results files.

Every figure is a ratio against a baseline measured in the same run: the methods of a section run
interleaved (A B C, then B C A, …), each round gives one ratio per method, and the median ratio is
reported with its quartiles. The machine is shared, so absolute seconds move with the load; ratios
of neighbouring measurements move much less. Seconds are kept in the JSON files for the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Settings:
    batch_size: int = 8  # small: a training step of MiniLM takes seconds on the shared 2 cores
    max_length: int = 64
    rank: int = 8
    alpha: float = 16.0
    threads: int = 1  # torch threads: on a shared 2-core machine, 2 threads contend with others
    step_rounds: int = 3  # timed rounds per section (after one warm-up round)
    epoch_rows: int = 32  # demo (apple) train rows per timed epoch
    epoch_rounds: int = 2
    acc_rows_per_domain: int = 16  # training rows per target domain for the accuracy budget
    acc_golden_per_domain: int = 16
    infer_rounds: int = 5
    route_rounds: int = 3
    artifact_rounds: int = 5
    cli_rounds: int = 3  # whole `mlra` processes per command
    gpu_steps: int = 30
    lr: float = 1e-3  # adapters (params.yaml train.lr)
    head_lr: float = 3e-3
    full_lr: float = 5e-5  # full fine-tuning: the usual BERT fine-tuning rate
    seed: int = 0


QUICK = Settings(
    batch_size=4,
    step_rounds=1,
    epoch_rows=8,
    epoch_rounds=1,
    acc_rows_per_domain=2,
    acc_golden_per_domain=4,
    infer_rounds=1,
    route_rounds=1,
    artifact_rounds=1,
    cli_rounds=1,
    gpu_steps=5,
)


@dataclasses.dataclass(frozen=True)
class Section:
    """One benchmark section: ``measure`` returns its JSON-able results, ``report`` the Markdown
    lines of its part of the table (every figure saying what it measures)."""

    name: str
    measure: Callable[[Any], dict[str, Any]]  # takes a workloads.Context
    report: Callable[[dict[str, Any]], list[str]]


# -- timing ---------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    device: torch.device = CPU,
    warmup: int = 1,
    before: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``rounds`` times, interleaved with a rotating order.

    ``before[name]``, where given, runs untimed before each call of ``fns[name]`` (e.g. removing
    the adapter that the timed call loads again).
    """
    names = list(fns)
    before = before or {}

    def prepare(name: str) -> None:
        if name in before:
            before[name]()

    for _ in range(warmup):
        for name in names:
            prepare(name)
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            prepare(name)
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and extremes."""
    v = sorted(values)
    if len(v) == 1:
        q1 = q3 = v[0]
    else:
        q = statistics.quantiles(v, n=4, method="inclusive")
        q1, q3 = q[0], q[2]
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "min": v[0], "max": v[-1]}


def ratios(times: Mapping[str, Sequence[float]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per method: its seconds and its per-round ratio to ``baseline`` (median with spread)."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in times.items():
        per_round = [t / b for t, b in zip(values, times[baseline], strict=True)]
        out[name] = {"seconds": spread(values), "ratio": spread(per_round), "vs": baseline}
    return out


def ratio_between(times: Mapping[str, Sequence[float]], a: str, b: str) -> dict[str, Any]:
    """Per-round ratio of method ``a`` to method ``b`` (median with spread)."""
    per_round = [x / y for x, y in zip(times[a], times[b], strict=True)]
    return {"of": a, "vs": b, "ratio": spread(per_round)}


def fmt_ratio(x: Mapping[str, Any]) -> str:
    """A ratio with its spread: ``0.62× (0.60–0.65)`` — median (q1–q3)."""
    r = x.get("ratio", x)
    return f"{r['median']:.2f}× ({r['q1']:.2f}–{r['q3']:.2f})"


def fmt_ms(x: Mapping[str, Any]) -> str:
    """The median seconds of a ``ratios`` entry, in milliseconds."""
    return f"{x['seconds']['median'] * 1e3:.1f} ms"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- the machine and the results files ------------------------------------------------------------


def machine(load_before: Sequence[float] | None = None) -> dict[str, Any]:
    """CPU, cores, torch threads, memory, versions and the load average (now, and before)."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _mem_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "loadavg": list(os.getloadavg()),
    }
    if load_before is not None:
        info["loadavg_before"] = list(load_before)
    with contextlib.suppress(ImportError):
        import peft
        import transformers

        info["peft"], info["transformers"] = peft.__version__, transformers.__version__
    return info


def _mem_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def write_readme(table: str, readme: Path = README) -> None:
    """Put ``table`` between the results markers of the benchmarks README."""
    text = readme.read_text() if readme.is_file() else ""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + table + end + rest.split(end, 1)[1]
    else:
        text += f"\n{start}\n{table}{end}\n"
    readme.write_text(text)
