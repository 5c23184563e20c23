"""``mlra demo``: the library end to end on the packaged model and data, in a few minutes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlra._env import project_dir
from mlra.cli import _args
from mlra.data.source import DOMAIN_RULES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="adapt the packaged MiniLM to one tweet domain; show the gain over the base",
        description=(
            "Train a low-rank adapter (and a head) on one domain of the packaged tweets, save it, "
            "reload it in a fresh process, and compare accuracy and macro-F1 with the frozen base "
            "model plus a head trained on the same rows."
        ),
    )
    p.add_argument(
        "--domain",
        type=_args.choice("domain", [name for name, _ in DOMAIN_RULES]),
        default="apple",
        help="tweet domain to adapt to (default: apple)",
    )
    p.add_argument(
        "--steps", type=_args.positive_int, default=300, help="training steps (default: 300)"
    )
    p.add_argument("--batch-size", type=_args.positive_int, default=16)
    p.add_argument("--rank", type=_args.positive_int, default=8)
    p.add_argument(
        "--max-rows", type=_args.int_at_least(10), default=None, help="use at most this many rows"
    )
    p.add_argument("--seed", type=_args.non_negative_int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: .mlra/demo)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn
    from rich.table import Table

    from mlra.demo import DemoConfig, run_demo

    config = DemoConfig(
        domain=args.domain,
        steps=args.steps,
        batch_size=args.batch_size,
        rank=args.rank,
        max_rows=args.max_rows,
        seed=args.seed,
    )
    out = args.out or project_dir() / "demo"
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=args.json)
    console.print(f"[bold]mlra demo[/]: adapting MiniLM to the [bold]{config.domain}[/] tweets")
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = run_demo(config, out, progress)

    table = Table(title=f"{config.domain}: {result.test_rows} test tweets (never trained on)")
    for column in ("model", "accuracy", "macro-F1", *(f"F1 {k}" for k in result.base.f1)):
        table.add_column(column, justify="left" if column == "model" else "right")
    for label, s in (
        ("frozen base + head", result.base),
        ("+ adapter (in memory)", result.adapted),
        ("+ adapter (reloaded, fresh process)", result.reloaded),
    ):
        table.add_row(
            label, f"{s.accuracy:.3f}", f"{s.macro_f1:.3f}", *(f"{v:.3f}" for v in s.f1.values())
        )
    console.print(table)
    gain = result.adapted.macro_f1 - result.base.macro_f1
    console.print(
        f"macro-F1 {result.base.macro_f1:.3f} → {result.adapted.macro_f1:.3f} "
        f"([bold]{gain:+.3f}[/]) with {result.trainable_params:,} adapter parameters "
        f"({100 * result.trainable_params / result.base_params:.2f} % of the base); "
        f"{result.train_rows} training tweets, {config.steps} steps"
    )
    console.print(
        f"artifact: {result.artifact} ({result.artifact_bytes / 1024:.0f} KiB, "
        f"{100 * result.artifact_bytes / result.base_model_bytes:.2f} % of the base model); "
        f"reloaded in a fresh process with verified hashes and base fingerprint: same predictions"
    )
    console.print(
        "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0
