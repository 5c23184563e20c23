"""Training and evaluation commands: ``train`` and ``evaluate`` (the DVC stages of the same names).

Both read ``params.yaml`` (``--params``); options override single values for one run (the
overrides are part of the params hash recorded in the artifact). Lightning, torch and matplotlib
are imported inside the handlers. Every run is appended to the audit trail.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` and ``evaluate`` to the ``mlra`` command."""
    p = sub.add_parser(
        "train",
        help="train an adapter on the target domains (Lightning); write the adapter artifact",
        description="Fit the base head on source-domain rows (the no-adaptation model), then train "
        "an adapter and the head on the target-domain training rows plus accepted feedback. "
        "Writes <out>/adapter (the adapter artifact, with lineage) and <out>/base_head.safetensors."
        " A run killed mid-epoch resumes from its last checkpoint when started again.",
    )
    _params_option(p)
    p.add_argument("--prepared", type=Path, help="prepared splits (default: data.prepared_dir)")
    p.add_argument("--out", type=Path, help="output folder (default: train.out_dir)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    p.add_argument("--rows-per-domain", type=int, help="override train.rows_per_domain")
    p.add_argument("--accelerator", help="override train.accelerator (auto, cpu, cuda)")
    p.add_argument("--devices", type=int, help="override train.devices (> 1: DDP)")
    p.add_argument("--strategy", help="override train.strategy (auto, ddp, ddp_spawn)")
    p.add_argument("--precision", help="override train.precision (32-true, bf16-mixed, 16-mixed)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--fresh", action="store_true", help="ignore an interrupted run's checkpoint")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--actor", default="pipeline", help="who runs this, for the audit trail")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the result")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "evaluate",
        help="score base, candidate and champion per golden-set slice; write metrics and plots",
        description="Evaluate on the golden sets, per domain slice and overall: the base model "
        "(adapter disabled, base head), the candidate and, when there is one, the champion. "
        "Writes the metrics JSON (for `dvc metrics show`), a Markdown table and PNG plots.",
    )
    _params_option(p)
    p.add_argument(
        "--candidate", type=Path, help="what `mlra train` wrote (default: train.out_dir)"
    )
    p.add_argument("--champion", type=Path, help="champion folder (default: evaluate.champion_dir)")
    p.add_argument("--prepared", type=Path, help="prepared splits (default: data.prepared_dir)")
    p.add_argument("--max-rows-per-slice", type=int, help="override evaluate.max_rows_per_slice")
    p.add_argument("--actor", default="pipeline", help="who runs this, for the audit trail")
    p.add_argument("--json", action="store_true", help="print the metrics JSON")
    p.set_defaults(func=_evaluate)


def _params_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="parameter file (params.yaml)"
    )


def _actor(name: str) -> str:
    return name if name != "me" else getpass.getuser()


def _train(args: argparse.Namespace) -> int:
    from mlra.config import TrainParams, load_params

    params = load_params(args.params)
    overrides = {
        key: getattr(args, key)
        for key in (
            "max_steps",
            "max_epochs",
            "rows_per_domain",
            "accelerator",
            "devices",
            "strategy",
            "precision",
            "seed",
        )
        if getattr(args, key) is not None
    }
    tp: TrainParams = dataclasses.replace(params.train, **overrides)  # re-checked in __post_init__

    from rich.console import Console

    from mlra.audit import default_trail
    from mlra.events import record_training
    from mlra.training import train

    console = Console(stderr=True)
    started = time.perf_counter()
    result = train(
        params.data,
        tp,
        prepared_dir=args.prepared,
        out_dir=args.out,
        resume=not args.fresh,
        log_mlflow=not args.no_mlflow,
        progress_bar=not args.no_progress,
    )
    seconds = time.perf_counter() - started
    if not result.adapter_sha256:  # a DDP worker: rank 0 reports
        return 0
    meta = result.metadata
    record_training(default_trail(), _actor(args.actor), result, overrides)
    val = meta["val_metrics"]
    console.print(
        f"trained {meta['steps']} steps on {meta['rows']['train']:,} rows in {seconds:.0f} s "
        f"(base head {result.seconds['base_head']:.0f} s, training {result.seconds['train']:.0f} s)"
        f"{'; resumed from ' + result.resumed_from if result.resumed_from else ''}\n"
        f"validation: macro-F1 {val.get('val_macro_f1', float('nan')):.3f}, "
        f"accuracy {val.get('val_accuracy', float('nan')):.3f}\n"
        f"adapter → {result.adapter_dir} (sha256 {result.adapter_sha256[:12]}…)"
    )
    if args.json:
        summary = {"adapter": str(result.adapter_dir), "sha256": result.adapter_sha256,
                   "seconds": round(seconds, 1), "metadata": meta}  # fmt: skip
        print(json.dumps(summary, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mlra.config import load_params

    params = load_params(args.params)
    ep = params.evaluate
    if args.max_rows_per_slice is not None:
        ep = dataclasses.replace(ep, max_rows_per_slice=args.max_rows_per_slice)

    from rich.console import Console
    from rich.table import Table

    from mlra.audit import default_trail
    from mlra.evaluation import evaluate, write_outputs
    from mlra.events import record_evaluation

    started = time.perf_counter()
    candidate = args.candidate or Path(params.train.out_dir)
    champion = args.champion or (Path(ep.champion_dir) if ep.champion_dir else None)
    result = evaluate(params.data, ep, candidate, champion_dir=champion, prepared_dir=args.prepared)
    plots = write_outputs(result, ep.metrics_file, ep.report_file, ep.plots_dir)
    seconds = time.perf_counter() - started

    table = Table(title="golden-set macro-F1 (accuracy) per slice; † = few rows in a class")
    for column in ["slice", "rows", *result.models, "Δ vs base"]:
        table.add_column(column, justify="left" if column == "slice" else "right")
    for sl in result.slices.values():
        s = sl.scores
        cells: list[Any] = [sl.name + (" †" if sl.noisy else ""), f"{s['candidate'].support:,}"]
        cells += [f"{s[m].macro_f1:.3f} ({s[m].accuracy:.2f})" for m in result.models]
        cells.append(f"{s['candidate'].macro_f1 - s['base'].macro_f1:+.3f}")
        table.add_row(*cells)
    console = Console(stderr=args.json)  # --json: stdout holds only the JSON
    console.print(table)
    console.print(
        f"metrics → {ep.metrics_file}, table → {ep.report_file}, {len(plots)} plots → "
        f"{ep.plots_dir}/ ({seconds:.0f} s)"
    )
    record_evaluation(default_trail(), _actor(args.actor), result, ep.metrics_file)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    return 0
