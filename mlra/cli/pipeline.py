"""The pipeline commands: ``mlra run`` (the README's main job: one retrain, end to end) and
``mlra schedule`` (serve the scheduled retrain check on params.yaml's cron).

Both run Prefect flows (``flows/``), imported inside the handlers: ``mlra --help`` stays fast and
the library itself never imports Prefect.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from mlra.cli import _args
from mlra.cli.train import _params_option as params_option
from mlra.errors import ConfigError

OUTCOME_STYLE = {
    "promoted": "bold green",
    "awaiting_approval": "bold yellow",
    "gate_failed": "bold yellow",
    "rejected": "bold yellow",
    "promotion_refused": "bold yellow",
    "validation_failed": "bold red",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="the retraining pipeline once, end to end (Prefect flow mlra-retrain)",
        description="Ingest the feedback waiting in the inbox (simulating the next batch when "
        "none waits), prepare and validate the data, train an adapter, evaluate it against the "
        "base model and the champion, register it in MLflow, run the promotion gates and promote "
        "it as the policy says. Runs on Prefect's temporary server unless PREFECT_API_URL is set; "
        "MLflow on $MLFLOW_TRACKING_URI, else .mlra/mlruns.db.",
    )
    params_option(p)
    p.add_argument("--inbox", default=None, help="feedback folder (default: data.inbox_dir)")
    p.add_argument(
        "--no-simulate",
        action="store_true",
        help="do not simulate a feedback batch when the inbox has none",
    )
    p.add_argument(
        "--actor", type=_args.text, default="pipeline", help="who runs this, for the audit trail"
    )
    p.add_argument(
        "--approval-timeout",
        type=_args.seconds,
        default=None,
        metavar="SECONDS",
        help="how long to wait for a person's approval (default: pipeline.approval_timeout_s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no training progress bar")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the summary")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "schedule",
        help="serve the scheduled retrain check (mlra-retrain-if-due) on params.yaml's cron",
        description="Serve the flow mlra-retrain-if-due as a deployment on pipeline.schedule: at "
        "each tick it ingests what arrived and retrains when at least pipeline.min_new_rows new "
        "accepted rows came since the last trained version. Runs until interrupted. Needs a "
        "Prefect server that outlives it (PREFECT_API_URL; `prefect server start` or "
        "infra/local); prefect.yaml holds the same deployments for work pools.",
    )
    params_option(p)
    p.add_argument(
        "--cron",
        type=_args.cron,
        default=None,
        help="override pipeline.schedule (5-field cron, UTC)",
    )
    p.add_argument("--inbox", default=None, help="feedback folder (default: data.inbox_dir)")
    p.set_defaults(func=_schedule)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mlra.config import load_params

    params = load_params(args.params)  # bad params fail here, before Prefect starts
    console = Console(stderr=args.json, highlight=False)
    server = os.environ.get("PREFECT_API_URL") or "Prefect's temporary server"
    console.print(
        f"[bold]mlra run[/]: the retrain flow on {server}; MLflow at "
        f"{_tracking()}; model {params.registry.model_name}"
    )
    started = time.perf_counter()
    from flows import retrain

    state = retrain(
        params=str(args.params),
        inbox=args.inbox,
        simulate=False if args.no_simulate else None,
        actor=args.actor,
        progress_bar=not args.no_progress,
        approval_timeout_s=args.approval_timeout,
        return_state=True,
    )
    seconds = time.perf_counter() - started
    if state.is_failed():
        from rich.markup import escape

        from mlra.redact import redact_text

        error = redact_text(str(state.result(raise_on_failure=False)))
        console.print(f"[bold red]the retrain failed[/]: {escape(error)}")
        console.print(
            "nothing was promoted; the audit trail records what ran (`mlra audit show`); "
            f"the validation report is {params.validation.report_dir}/report.html when "
            "validation failed"
        )
        if args.json:
            print(json.dumps({"outcome": "failed", "error": error, "seconds": seconds}))
        return 1
    summary: dict[str, Any] = state.result()
    _print_summary(console, summary, seconds)
    if args.json:
        print(json.dumps({**summary, "seconds": round(seconds, 1)}, default=str))
    return 0


def _tracking() -> str:
    from mlra._env import tracking_uri
    from mlra.audit import redact

    return str(redact(tracking_uri()))


def _print_summary(console: Any, s: dict[str, Any], seconds: float) -> None:
    from rich.table import Table

    from flows.retrain import mlflow_link
    from mlra.governance import version_label

    if s["slices"]:
        models = [k.removesuffix(" macro-F1") for k in s["slices"][0] if k.endswith("macro-F1")]
        table = Table(title="golden-set macro-F1 per slice (never trained on)")
        columns = ["slice", "rows", *models, "Δ vs base"] + (
            ["Δ vs champion"] if "champion" in models else []
        )
        for column in columns:
            table.add_column(column, justify="left" if column == "slice" else "right")
        for row in s["slices"]:
            cells = [str(row["slice"]), f"{row['rows']:,}"]
            cells += [f"{row[f'{m} macro-F1']:.3f}" for m in models]
            cells += [f"{row['Δ vs base']:+.3f}"]
            if "champion" in models:
                cells += [f"{row['Δ vs champion']:+.3f}"]
            table.add_row(*cells)
        console.print(table)
    style = OUTCOME_STYLE.get(s["outcome"], "bold")
    decision = f": {s['decision']}" if s["decision"] else ""
    console.print(f"outcome: [{style}]{s['outcome']}[/]{decision}")
    if s["simulated"]:
        console.print(f"feedback: simulated {s['simulated']}")
    ingested = s["ingested"]
    console.print(
        f"data: {ingested.get('read', 0)} rows read, {ingested.get('accepted', 0)} accepted, "
        f"{ingested.get('quarantined', 0)} quarantined; {s['feedback_rows']} accepted feedback "
        f"rows in all; validation {s['validation']}"
    )
    if s.get("modules"):
        _print_modules(console, s)
    if s["version"]:
        console.print(
            f"registered: {s['model']} v{s['version']} (run {s['run_id']}); champion "
            f"{version_label(s['champion_before'])} → {version_label(s['champion_after'])}; "
            f"{s['steps']} training steps in {s['train_seconds']} s"
        )
    console.print(f"total: {seconds:.0f} s\n\n[bold]where to look[/]")
    prefect_home = os.environ.get("PREFECT_HOME", ".mlra/prefect")
    looks = [
        ("status", "mlra status"),
        ("audit trail", "mlra audit verify; mlra audit show"),
        ("MLflow UI", mlflow_link(s["tracking_uri"], s["model"], s["version"] or "1")
         if s["version"] else f"mlra ui (serves {s['tracking_uri']})"),
        ("Prefect UI", os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
         or f"PREFECT_HOME={prefect_home} prefect server start, then http://127.0.0.1:4200"),
        ("evaluation", "metrics/modules/*.md, plots/modules/*/*.png" if s.get("modules")
         else "metrics/eval.md, plots/*.png"),
        ("validation", str(s["validation_report"] or "").replace("report.json", "report.html")),
    ]  # fmt: skip
    for key, value in looks:
        console.print(f"  {key + ':':<13} {value}")
    if s["outcome"] == "awaiting_approval":
        console.print(
            f"\nv{s['version']} waits for a person: `mlra approve {s['version']} --by NAME "
            "--reason TEXT` approves and promotes it"
        )


def _print_modules(console: Any, s: dict[str, Any]) -> None:
    """The modular retrain's modules, one row each, and the bundle that serves now."""
    from rich.table import Table

    from mlra.governance import version_label

    table = Table(title="modules (each its own registered model)")
    for column in ("module", "due", "version", "base", "champion", "new", "outcome", "serving"):
        table.add_column(
            column, justify="right" if column in ("base", "champion", "new") else "left"
        )
    for row in s["modules"]:
        f1 = row.get("macro-F1") or {}
        table.add_row(
            row["module"],
            ("yes" if row["due"] else "no")
            + (
                f" ({row['why']})"
                if row["why"] in ("never trained", "its parameters changed")
                else f" ({row['new_rows']} new)"
            ),
            version_label(row.get("version")) if row.get("version") else "",
            *(f"{f1[k]:.3f}" if k in f1 else "" for k in ("base", "champion", "candidate")),
            row.get("outcome", ""),
            f"{row.get('champion_before', '')} → {row.get('champion_after', '')}",
        )
    console.print("macro-F1 on each module's own golden slice (base, champion, new version)")
    console.print(table)
    for gate in s.get("bundle_gates") or []:
        console.print(f"bundle gate: {gate}")
    console.print(f"serving: {s.get('bundle') or 'unchanged'}")
    model = s.get("model") or "MODEL"
    for row in s["modules"]:
        if row.get("outcome") == "awaiting_approval":
            console.print(
                f"{row['module']} v{row['version']} waits for a person: `mlra approve "
                f"{row['version']} --module {row['module']} --by NAME --reason TEXT` "
                f"promotes it ({model}.{row['module']})"
            )


def _schedule(args: argparse.Namespace) -> int:
    from mlra.config import load_params

    params = load_params(args.params)
    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError(
            "`mlra schedule` serves a deployment, which needs a Prefect server that outlives it: "
            "start one (`prefect server start`, or infra/local/start.sh) and set PREFECT_API_URL"
        )
    cron = args.cron or params.pipeline.schedule
    from mlra.config import PipelineParams

    PipelineParams(**{**params.pipeline.__dict__, "schedule": cron})  # checks --cron
    from flows import retrain_if_due

    retrain_if_due.serve(
        name="mlra-retrain-if-due",
        cron=cron,
        parameters={"params": str(Path(args.params).resolve()), "inbox": args.inbox},
        description="Retrain when enough new accepted feedback arrived (mlra schedule)",
        tags=["mlra"],
    )
    return 0
