"""mlra against PEFT, full fine-tuning and the physical floor, measured side by side in one run.

    python -m benchmarks.run                     # every section (make bench): results/ + README
    python -m benchmarks.run --section artifact  # one section (or a comma-separated list)
    python -m benchmarks.run --quick             # a 1–2 minute smoke run into .mlra/bench-quick

Sections (one module each, over benchmarks/harness.py): steps (1), epoch, accuracy (2),
memory (3), inference (4), route (5), artifact (6), gpu (7, only with CUDA), cli (8), modules (9:
modular adapters, ~30 min), and library when benchmarks/library.py exists. Targets:
benchmarks/targets.py. See benchmarks/README.md.

Running some sections into a folder keeps the other sections' results there: the table is made
from every section's JSON in the folder, and machine.json says when and under what load each
section was measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import (
    accuracy,
    artifact,
    cli,
    epoch,
    gpu,
    inference,
    memory,
    modules,
    route,
    steps,
)
from benchmarks.harness import (
    QUICK,
    RESULTS,
    ROOT,
    Section,
    Settings,
    machine,
    quiet,
    read_json,
    write_json,
    write_readme,
)
from benchmarks.targets import targets_table
from benchmarks.workloads import Context, Data

_BUILT_IN = tuple(
    m.SECTION
    for m in (steps, epoch, accuracy, memory, inference, route, artifact, gpu, cli, modules)
)


def _library_section(module_name: str = "benchmarks.library") -> Section | None:
    """benchmarks/library.py as a section when it is there: its ``run() -> dict`` measures (with
    ``quick=`` when it takes that and the run is ``--quick``; it loads its own models), its
    ``report(result)``, if any, renders; else :func:`_generic_report`."""
    if importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    takes_quick = "quick" in inspect.signature(module.run).parameters

    def measure(ctx: Context) -> dict[str, Any]:
        if takes_quick:
            return dict(module.run(quick=ctx.settings == QUICK))
        return dict(module.run())

    render = getattr(module, "report", None)
    return Section("library", measure, render if callable(render) else _generic_report("library"))


def _generic_report(name: str) -> Callable[[dict[str, Any]], list[str]]:
    """A section without a report of its own: one row per figure, named by its key path; a
    ``{median, q1, q3}`` spread shows as ``median (q1–q3)``; seconds stay in the JSON file."""

    def report(result: dict[str, Any]) -> list[str]:
        lines = [
            f"### {name}",
            "",
            f"Measures: what benchmarks/{name}.py reports, each figure named by its key path "
            f"(ratios: median of per-round ratios, (q1–q3) their quartiles; seconds in "
            f"`{name}.json`).",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        lines += [f"| {key} | {value} |" for key, value in _figures(result)]
        return lines

    return report


def _figures(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(node, Mapping):
        if {"median", "q1", "q3"} <= node.keys():
            return [(prefix, f"{node['median']:.3g} ({node['q1']:.3g}–{node['q3']:.3g})")]
        out: list[tuple[str, str]] = []
        for key, value in node.items():
            if key != "seconds":
                out += _figures(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(node, float):
        return [(prefix, f"{node:.4g}")]
    return [(prefix, str(node))] if isinstance(node, int | str | bool) else []


def sections() -> dict[str, Section]:
    """Every section, in report order."""
    found = {s.name: s for s in _BUILT_IN}
    library = _library_section()
    if library is not None:
        found[library.name] = library
    return found


def run(
    settings: Settings,
    names: Sequence[str],
    out_dir: Path,
    *,
    readme: bool = False,
    log: Callable[[str], None] = print,
    data: Data | None = None,
) -> dict[str, Any]:
    """Run the sections ``names``; write ``out_dir/<section>.json``, ``machine.json`` and
    ``results.md`` (made from every section's results in ``out_dir``)."""
    from mlra._env import apply_runtime_defaults

    known = sections()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; known: {', '.join(known)}")
    apply_runtime_defaults()
    torch.set_num_threads(settings.threads)
    ctx = Context(settings, data=data)
    load_before = os.getloadavg()
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    section_seconds: dict[str, float] = {}
    for name in names:
        clock = time.perf_counter()
        log(f"[bench] {name} …")
        with quiet():
            torch.manual_seed(settings.seed)
            results[name] = known[name].measure(ctx)
        section_seconds[name] = time.perf_counter() - clock
        write_json(out_dir / f"{name}.json", results[name])
        log(f"[bench] {name}: {section_seconds[name]:.0f} s")
    seconds = time.perf_counter() - started
    mach = machine(load_before)
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    earlier = _measured(read_json(out_dir / "machine.json") or {})
    this_run = {
        name: {
            "date": when,
            "seconds": section_seconds[name],
            "loadavg_before": list(load_before),
            "loadavg_after": mach["loadavg"],
        }
        for name in names
    }
    mach.update(
        settings=dataclasses.asdict(settings),
        total_seconds=seconds,
        date=when,
        sections={k: v for k, v in earlier.items() if k in known} | this_run,
    )
    write_json(out_dir / "machine.json", mach)
    everything = {
        name: found
        for name in known
        if (found := results.get(name, read_json(out_dir / f"{name}.json"))) is not None
    }
    table = markdown(everything, mach, settings, known)
    (out_dir / "results.md").write_text(table)
    if readme:
        write_readme(table)
    return {"machine": mach, "results": results, "markdown": table}


def _measured(mach: Mapping[str, Any]) -> dict[str, Any]:
    """When and under what load each section in a machine.json was measured (also from the
    format before sections could run alone: one date and load for all of them)."""
    if "sections" in mach:
        return dict(mach["sections"])
    return {
        name: {
            "date": mach.get("date", "?"),
            "seconds": seconds,
            "loadavg_before": mach.get("loadavg_before", [0.0]),
            "loadavg_after": mach.get("loadavg", [0.0]),
        }
        for name, seconds in mach.get("section_seconds", {}).items()
    }


def markdown(
    results: Mapping[str, Any],
    mach: Mapping[str, Any],
    settings: Settings,
    known: Mapping[str, Section],
) -> str:
    """The README's results part: the machine, the targets, then each section's report."""
    runs: dict[tuple[str, float, float], list[str]] = {}
    for name, m in mach.get("sections", {}).items():
        if name in results:
            key = (m["date"], m["loadavg_before"][0], m["loadavg_after"][0])
            runs.setdefault(key, []).append(f"{name} {m['seconds']:.0f} s")
    when = "; ".join(
        f"{date}, load {before:.1f} → {after:.1f}: {', '.join(names)}"
        for (date, before, after), names in runs.items()
    )
    lines = [
        f"Machine: {mach['cpu']}, {mach['cores']} cores, torch threads {mach['torch_threads']}, "
        f"{mach.get('memory_gib')} GiB; torch {mach['torch']}, peft {mach.get('peft')}, "
        f"transformers {mach.get('transformers')}. Batch {settings.batch_size}, max length "
        f"{settings.max_length}, rank {settings.rank}, fp32 on CPU.",
        "",
        f"Measured (date, 1-minute load average before → after: section and its seconds): {when}. "
        "A shared machine: compare ratios, not seconds.",
        "",
        "Ratios are medians of per-round ratios, (q1–q3) their quartiles; each table says what "
        "is divided by what.",
        "",
        "### Targets",
        "",
        *targets_table(results),
    ]
    for name, section in known.items():
        if name in results:
            try:
                lines += ["", *section.report(results[name])]
            except (KeyError, TypeError):  # a JSON file from an older harness
                lines += ["", f"### {name}", "", f"Older results format: rerun `--section {name}`."]
    if "gpu" not in results:
        lines += ["", "### 7. GPU", "", "Skipped: not run."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    known = sections()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (1–2 min): a smoke run into .mlra/bench-quick",
    )
    parser.add_argument(
        "--section",
        "--sections",
        dest="sections",
        default=",".join(known),
        metavar="NAME",
        help=f"the section(s) to run, comma-separated: {','.join(known)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set batch_size=4",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    fields = {f.name for f in dataclasses.fields(Settings)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in fields:
            parser.error(
                f"unknown setting {key!r} in --set {item}; known: {', '.join(sorted(fields))}"
            )
        kind = type(getattr(settings, key))
        try:
            settings = dataclasses.replace(settings, **{key: kind(value)})
        except ValueError:
            parser.error(f"--set {item}: {key} must be of type {kind.__name__}, got {value!r}")
    names = [x for x in args.sections.split(",") if x]
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(known)}")
    out = args.out or (ROOT / ".mlra" / "bench-quick" if args.quick else RESULTS)
    result = run(settings, names, out, readme=not args.quick and args.out is None)
    print(result["markdown"])
    print(f"[bench] results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
