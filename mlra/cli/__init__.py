"""The ``mlra`` command.

Each group of subcommands lives in its own module under ``mlra/cli/`` and exposes
``register(subparsers)``. Heavy libraries (torch, lightning, mlflow, great_expectations) are
imported inside the command that needs them, so ``mlra --help`` starts in well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mlra import __version__
from mlra._env import apply_runtime_defaults
from mlra.errors import MlraError

__all__ = ["build_parser", "main"]

# Modules that contribute subcommands, in the order they appear in ``mlra --help``.
COMMAND_MODULES = (
    "mlra.cli.pipeline",
    "mlra.cli.data",
    "mlra.cli.train",
    "mlra.cli.demo",
    "mlra.cli.audit",
    "mlra.cli.registry",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlra",
        description="Modular low-rank adapters and an auditable retraining pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"mlra {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    apply_runtime_defaults()
    try:
        return int(args.func(args) or 0)
    except MlraError as exc:
        print(f"mlra {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
