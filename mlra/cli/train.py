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

from mlra.cli import _args

# what mlra.config's TrainParams accepts (not imported here: mlra.config pulls in yaml)
ACCELERATORS = ("auto", "cpu", "cuda", "gpu")
STRATEGIES = ("auto", "ddp", "ddp_spawn")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


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
    p.add_argument(
        "--prepared", type=_args.existing_dir, help="prepared splits (default: data.prepared_dir)"
    )
    p.add_argument("--out", type=Path, help="output folder (default: train.out_dir)")
    p.add_argument("--max-steps", type=_args.step_limit, help="override train.max_steps")
    p.add_argument("--max-epochs", type=_args.positive_int, help="override train.max_epochs")
    p.add_argument(
        "--rows-per-domain", type=_args.non_negative_int, help="override train.rows_per_domain"
    )
    p.add_argument(
        "--accelerator",
        type=_args.choice("accelerator", ACCELERATORS),
        help="override train.accelerator (auto, cpu, cuda, gpu)",
    )
    p.add_argument("--devices", type=_args.positive_int, help="override train.devices (> 1: DDP)")
    p.add_argument(
        "--strategy",
        type=_args.choice("strategy", STRATEGIES),
        help="override train.strategy (auto, ddp, ddp_spawn)",
    )
    p.add_argument(
        "--precision",
        type=_args.choice("precision", PRECISIONS),
        help="override train.precision (32-true, bf16-mixed, 16-mixed)",
    )
    p.add_argument("--seed", type=_args.non_negative_int, help="override train.seed")
    p.add_argument("--fresh", action="store_true", help="ignore an interrupted run's checkpoint")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--actor", type=_args.text, default="pipeline", help="who runs this, for the audit trail"
    )
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
        "--candidate",
        type=_args.existing_dir,
        help="what `mlra train` wrote (default: train.out_dir)",
    )
    p.add_argument(
        "--champion",
        type=_args.existing_dir,
        help="champion folder (default: evaluate.champion_dir)",
    )
    p.add_argument(
        "--prepared", type=_args.existing_dir, help="prepared splits (default: data.prepared_dir)"
    )
    p.add_argument(
        "--max-rows-per-slice",
        type=_args.non_negative_int,
        help="override evaluate.max_rows_per_slice (0: all)",
    )
    p.add_argument(
        "--actor", type=_args.text, default="pipeline", help="who runs this, for the audit trail"
    )
    p.add_argument("--json", action="store_true", help="print the metrics JSON")
    p.set_defaults(func=_evaluate)


def _params_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        type=_args.existing_file,
        default=Path("params.yaml"),
        help="parameter file (params.yaml)",
    )


def _actor(name: str) -> str:
    return name if name != "me" else getpass.getuser()


def _train(args: argparse.Namespace) -> int:
    from mlra.config import load_params

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
    dataclasses.replace(params.train, **overrides)  # bad overrides fail before anything loads

    from rich.console import Console

    from mlra import steps

    console = Console(stderr=True)
    started = time.perf_counter()
    result = steps.train(  # trains, then records the candidate in the audit trail
        params,
        _actor(args.actor),
        overrides=overrides,
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
    val = meta["val_metrics"]
    console.print(
        f"trained {meta['steps']} steps on {meta['rows']['train']:,} rows in {seconds:.0f} s "
        f"(base head {result.seconds['base_head']:.0f} s, training {result.seconds['train']:.0f} s)"
        f"{'; resumed from ' + result.resumed_from if result.resumed_from else ''}\n"
        + (
            f"validation: macro-F1 {val['val_macro_f1']:.3f}, "
            f"accuracy {val.get('val_accuracy', float('nan')):.3f}\n"
            if "val_macro_f1" in val
            else "validation: none ran (train.max_steps ended the run before one)\n"
        )
        + f"adapter → {result.adapter_dir} (sha256 {result.adapter_sha256[:12]}…)"
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

    from rich.console import Console
    from rich.table import Table

    from mlra import steps

    started = time.perf_counter()
    # without --champion: the champion that serves now (by the audit trail), verified, named in
    # the metrics (`mlra register` checks the name); never an older one left in the folder
    result, plots = steps.evaluate(
        params,
        _actor(args.actor),
        candidate_dir=args.candidate,
        champion_dir=args.champion,
        prepared_dir=args.prepared,
        max_rows_per_slice=args.max_rows_per_slice,
    )
    seconds = time.perf_counter() - started

    table = Table(title="golden-set macro-F1 (accuracy) per slice; † = few rows in a class")
    for column in ["slice", "rows", *result.models, "Δ vs base"]:
        # slice names whole at any width (the figures wrap instead)
        table.add_column(column, justify="left" if column == "slice" else "right",
                         no_wrap=column == "slice")  # fmt: skip
    for sl in result.slices.values():
        s = sl.scores
        cells: list[Any] = [sl.name + (" †" if sl.noisy else ""), f"{s['candidate'].support:,}"]
        cells += [f"{s[m].macro_f1:.3f} ({s[m].accuracy:.2f})" for m in result.models]
        cells.append(f"{sl.delta('base'):+.3f}")
        table.add_row(*cells)
    console = Console(stderr=args.json)  # --json: stdout holds only the JSON
    console.print(table)
    console.print(
        f"metrics → {ep.metrics_file}, table → {ep.report_file}, {len(plots)} plots → "
        f"{ep.plots_dir}/ ({seconds:.0f} s)"
    )
    ref = result.info.get("champion_ref")
    if ref:
        console.print(f"compared with champion v{ref['version']} ({ref['adapter_sha256'][:12]}…)")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    return 0
