"""Data commands: ``prepare``, ``feedback simulate``, ``ingest``, ``validate``.

Every command reads ``params.yaml`` (``--params``); folders default to the ``data`` section and
can be overridden per call. pandas, pyarrow and great_expectations are imported inside the
handlers, so ``mlra --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.cli import _args

if TYPE_CHECKING:
    from mlra.config import Params


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prepare``, ``feedback``, ``ingest`` and ``validate`` to the ``mlra`` command."""
    p = sub.add_parser(
        "prepare",
        help="write train/val/test/golden splits (corpus + accepted feedback)",
        description="Write the train/val/test/golden Parquet splits and manifest.json from the "
        "tweet corpus and the accepted feedback. A row's split depends only on its id.",
    )
    _params_option(p)
    p.add_argument("--out", type=Path, help="output folder (default: data.prepared_dir)")
    p.add_argument("--feedback", type=Path, help="feedback store (default: data.feedback_dir)")
    p.add_argument("--metrics", type=Path, help="also write rows per split as a metrics JSON file")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("feedback", help="field feedback tools")
    fsub = p.add_subparsers(dest="feedback_command", metavar="COMMAND", required=True)
    p = fsub.add_parser(
        "simulate",
        help="write dated feedback files from held-out target-domain rows",
        description="Write dated feedback files (JSONL and CSV, alternating) drawn from the "
        "target-domain rows that prepare holds out, as operators' labels would arrive.",
    )
    _params_option(p)
    p.add_argument("--out", type=Path, help="output folder (default: data.inbox_dir)")
    p.add_argument(
        "--batches", type=_args.positive_int, help="number of files (default: feedback.batches)"
    )
    p.set_defaults(func=_simulate)

    p = sub.add_parser(
        "ingest",
        help="check feedback files; accept good rows, quarantine bad ones",
        description="Read JSONL, CSV and Parquet feedback files (or folders of them) and check "
        "every row. Accepted rows go to the store's accepted/ Parquet, rejected rows to its "
        "quarantine/ JSONL with their reason. Files already ingested are skipped.",
    )
    p.add_argument(
        "paths", nargs="+", type=_args.existing_path, metavar="PATH", help="files or folders"
    )
    _params_option(p)
    p.add_argument("--store", type=Path, help="feedback store (default: data.feedback_dir)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of totals")
    _actor_option(p)
    p.set_defaults(func=_ingest)

    p = sub.add_parser(
        "validate",
        help="run the validation gate (Great Expectations) over the prepared data",
        description="Check the prepared training data and the drift of the newest accepted "
        "feedback; write report.json and Data Docs. Exits 1 when the gate fails.",
    )
    _params_option(p)
    p.add_argument(
        "--prepared", type=_args.existing_dir, help="prepared splits (default: data.prepared_dir)"
    )
    p.add_argument("--feedback", type=Path, help="feedback store (default: data.feedback_dir)")
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default: validation.report_dir)"
    )
    p.add_argument("--metrics", type=Path, help="also write summary numbers as a metrics JSON")
    p.add_argument("--no-docs", action="store_true", help="skip the Data Docs site (faster)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _actor_option(p)
    p.set_defaults(func=_validate)


def _params_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        type=_args.existing_file,
        default=Path("params.yaml"),
        help="parameter file (params.yaml)",
    )


def _actor_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--actor", type=_args.text, default="pipeline", help="who runs this, for the audit trail"
    )


def _load(args: argparse.Namespace) -> Params:
    from mlra.config import load_params

    return load_params(args.params)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _prepare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mlra import steps
    from mlra.data.splits import SPLITS

    params = _load(args)
    console = _console()
    started = time.perf_counter()
    with console.status("preparing splits..."):
        result = steps.prepare(params, out_dir=args.out, feedback_dir=args.feedback)
    table = Table(title=f"prepared {result.manifest['rows']:,} rows → {result.out_dir}")
    table.add_column("domain")
    for name in SPLITS:
        table.add_column(name, justify="right")
    domains = sorted({d for s in result.manifest["splits"].values() for d in s["by_domain_label"]})
    for domain in domains:
        cells = [
            sum(result.manifest["splits"][s]["by_domain_label"].get(domain, {}).values())
            for s in SPLITS
        ]
        table.add_row(domain, *(f"{c:,}" for c in cells))
    table.add_row("total", *(f"{result.counts[s]:,}" for s in SPLITS), style="bold")
    console.print(table)
    console.print(
        f"corpus rows {result.manifest['corpus_rows']:,}, feedback rows "
        f"{result.manifest['feedback_rows']:,}; {time.perf_counter() - started:.1f} s"
    )
    if args.metrics:
        _write_json(
            args.metrics,
            {
                "rows": result.manifest["rows"],
                "feedback_rows": result.manifest["feedback_rows"],
                **{f"{s}_rows": result.counts[s] for s in SPLITS},
            },
        )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from mlra.data.feedback import simulate
    from mlra.errors import ConfigError

    params = _load(args)
    if args.batches is not None and args.batches < 1:
        raise ConfigError(f"--batches must be >= 1, got {args.batches}")
    console = _console()
    with console.status("drawing feedback from the held-out pool..."):
        paths = simulate(params, out_dir=args.out, batches=args.batches)
    for path in paths:
        rows = _count_rows(path)
        console.print(f"wrote {path} ({rows} rows)")
    return 0


def _count_rows(path: Path) -> int:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(lines) - (1 if path.suffix == ".csv" else 0)


def _ingest(args: argparse.Namespace) -> int:
    from rich.progress import Progress
    from rich.table import Table

    from mlra import steps
    from mlra.data.ingest import expand_paths

    params = _load(args)
    store = args.store if args.store is not None else Path(params.data.feedback_dir)
    files = expand_paths(args.paths)
    console = _console()
    started = time.perf_counter()
    with Progress(console=console, transient=True, disable=args.json) as bar:
        task = bar.add_task("ingesting", total=len(files))

        def advance(path: Path) -> None:
            bar.update(task, advance=1, description=f"ingesting {path.name}")

        # records the ingest when anything new was read (a re-run adds nothing)
        result = steps.ingest(params, args.paths, args.actor, store=store, progress=advance)
    elapsed = time.perf_counter() - started

    table = Table(title=f"ingest → {store}" + (f" (batch {result.batch})" if result.batch else ""))
    for column, justify in (("file", "left"), ("status", "left"), ("read", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("accepted", justify="right", style="green")
    table.add_column("quarantined", justify="right", style="red")
    table.add_column("reasons")
    for f in result.files:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(f.reasons.items()))
        table.add_row(
            Path(f.path).name,
            f.status,
            str(f.read),
            str(f.accepted),
            str(f.quarantined),
            f.note if f.status == "skipped" else reasons,
        )
    table.add_row("total", "", str(result.read), str(result.accepted), str(result.quarantined), "")
    console.print(table)
    rate = result.read / elapsed if elapsed > 0 else 0.0
    console.print(f"{elapsed:.2f} s, {rate:,.0f} rows/s")
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mlra import steps
    from mlra.validation import brief

    params = _load(args)
    out = args.out if args.out is not None else Path(params.validation.report_dir)
    console = _console()
    with console.status("validating (Great Expectations)..."):
        report = steps.validate(
            params,
            args.actor,
            prepared_dir=args.prepared,
            feedback_dir=args.feedback,
            out_dir=out,
            data_docs=not args.no_docs,
        )
    if args.metrics:
        _write_json(args.metrics, report.metrics())
    if args.json:
        print(report.to_json(), end="")
    else:
        table = Table(title=f"validation gate: {'PASSED' if report.passed else 'FAILED'}")
        table.add_column("check")
        table.add_column("expectation")
        table.add_column("result")
        table.add_column("observed", overflow="fold", max_width=50)
        for o in report.expectations:
            verdict = "[green]pass[/]" if o.success else "[bold red]FAIL[/]"
            table.add_row(o.check, o.name, verdict, brief(o.observed))
        console.print(table)
        console.print(f"drift: {report.drift_status}")
        console.print(f"report: {out / 'report.html'} (and report.json)")
        if report.data_docs:
            console.print(f"data docs: {report.data_docs}")
        console.print(f"{report.duration_s:.1f} s")
    report.raise_if_failed()
    return 0
