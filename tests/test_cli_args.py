"""Every bad argument of every ``mlra`` subcommand is argparse's usage error naming the value:
exit 2, no traceback, before a handler runs (parse only, in-process; nothing heavy starts)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from mlra.cli import build_parser, main

HERE = Path(__file__).resolve()
FILE = str(HERE)  # a file that exists
DIR = str(HERE.parent)  # a folder that exists
MISSING = str(HERE.parent / "no-such-thing.jsonl")

# (argv, a phrase the error line must hold: it names the bad value)
BAD: list[tuple[list[str], str]] = [
    # model versions
    (["gate", "abc"], "invalid version 'abc'"),
    (["gate", "0"], "invalid version '0'"),
    (["gate", "1.5"], "invalid version '1.5'"),
    (["approve", "v3", "--by", "ann", "--reason", "ok"], "invalid version 'v3'"),
    (["reject", "-2", "--by", "ann", "--reason", "no"], "invalid version '-2'"),
    (["promote", "abc"], "invalid version 'abc'"),
    (["predict", "--version", "abc", "hello"], "invalid version 'abc'"),
    (["audit", "show", "--version", "latest"], "invalid version 'latest'"),
    # names and reasons as they will be recorded
    (["approve", "1", "--by", "", "--reason", "ok"], "argument --by: empty value ''"),
    (["approve", "1", "--by", "ann", "--reason", "   "], "argument --reason: empty value '   '"),
    (["reject", "1", "--by", "ann", "--reason", ""], "argument --reason: empty value ''"),
    (["rollback", "--by", "ann", "--reason", ""], "argument --reason: empty value ''"),
    (["rollback", "--reason", "latency"], "the following arguments are required: --by"),
    (["rollback", "--by", "ann"], "the following arguments are required: --reason"),
    (["repair", "--reason", " "], "argument --reason: empty value ' '"),
    (["gate", "1", "--by", ""], "argument --by: empty value ''"),
    (["predict", "--version", "1", ""], "argument TEXT: empty value ''"),
    (["predict", "--alias", "boss", "hi"], "invalid alias 'boss'"),
    (["status", "--tracking-uri", ""], "argument --tracking-uri: empty value ''"),
    (["run", "--actor", ""], "argument --actor: empty value ''"),
    (["ingest", DIR, "--actor", " "], "argument --actor: empty value ' '"),
    (["audit", "verify", "--path", ""], "argument --path: empty value ''"),
    (["audit", "show", "--action", "launch"], "invalid action 'launch'"),
    (["keys", "show", " "], "argument name: empty value ' '"),
    (["keys", "list", "--all"], "unrecognized arguments: --all"),
    # durations and counts
    (["run", "--approval-timeout", "-5"], "invalid number of seconds '-5'"),
    (["run", "--approval-timeout", "soon"], "invalid number of seconds 'soon'"),
    (["schedule", "--cron", "0 3 * *"], "invalid cron expression '0 3 * *'"),
    (["schedule", "--cron", "every day"], "invalid cron expression 'every day'"),
    (["feedback", "simulate", "--batches", "0"], "invalid value '0': expected an integer >= 1"),
    (["feedback", "simulate", "--batches", "two"], "invalid value 'two'"),
    (["train", "--max-steps", "0"], "invalid step count '0'"),
    (["train", "--max-epochs", "-1"], "invalid value '-1': expected an integer >= 1"),
    (["train", "--rows-per-domain", "-1"], "invalid value '-1': expected an integer >= 0"),
    (["train", "--devices", "0"], "invalid value '0'"),
    (["train", "--seed", "-3"], "invalid value '-3'"),
    (["train", "--accelerator", "tpu"], "invalid accelerator 'tpu'"),
    (["train", "--strategy", "fsdp"], "invalid strategy 'fsdp'"),
    (["train", "--precision", "fp8"], "invalid precision 'fp8'"),
    (["evaluate", "--max-rows-per-slice", "-2"], "invalid value '-2'"),
    (["demo", "--steps", "0"], "invalid value '0'"),
    (["demo", "--batch-size", "x"], "invalid value 'x'"),
    (["demo", "--rank", "-8"], "invalid value '-8'"),
    (["demo", "--max-rows", "5"], "invalid value '5': expected an integer >= 10"),
    (["demo", "--seed", "-1"], "invalid value '-1'"),
    (["demo", "--domain", "mars"], "invalid domain 'mars'"),
    (["bundle", "show", "--at", "last tuesday"], "--at must be an ISO 8601 date or time"),
    (["bundle", "record", "--by", "", "--reason", "x"], "empty value ''"),
    # paths that must exist
    (["prepare", "--params", MISSING], f"no such file: '{MISSING}'"),
    (["modules", "--params", MISSING], f"no such file: '{MISSING}'"),
    (["status", "--params", DIR], f"'{DIR}' is a folder: expected a file"),
    (["ingest", MISSING], f"no such file or folder: '{MISSING}'"),
    (["validate", "--prepared", MISSING], f"no such folder: '{MISSING}'"),
    (["train", "--prepared", FILE], f"'{FILE}' is a file: expected a folder"),
    (["evaluate", "--candidate", MISSING], f"no such folder: '{MISSING}'"),
    (["evaluate", "--champion", MISSING], f"no such folder: '{MISSING}'"),
    (["register", MISSING, "--metrics", FILE, "--validation", FILE], "no such folder"),
    (["register", DIR, "--metrics", MISSING, "--validation", FILE], f"no such file: '{MISSING}'"),
    (["register", DIR, "--metrics", FILE, "--validation", DIR], "is a folder: expected a file"),
    (
        ["register", DIR, "--metrics", FILE, "--validation", FILE, "--plot", MISSING],
        f"no such file: '{MISSING}'",
    ),
]

# what another session builds and tests itself (its own option checks)
NOT_HERE = {"ui"}


@pytest.mark.parametrize(("argv", "phrase"), BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_argument_is_a_usage_error_naming_the_value(
    argv: list[str], phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlra") and ": error: " in last, err  # unknown options: by "mlra:"
    assert phrase in last, last
    assert err.strip().splitlines()[0].startswith("usage: mlra")


def _subcommands() -> set[str]:
    names: set[str] = set()

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    full = f"{prefix} {name}".strip()
                    names.add(full)
                    walk(child, full)

    walk(build_parser(), "")
    return names


def test_every_subcommand_has_bad_arguments_in_the_table() -> None:
    covered = {" ".join(a[:2]) for a, _ in BAD} | {a[0] for a, _ in BAD}
    leaves = {n for n in _subcommands() if not any(m.startswith(n + " ") for m in _subcommands())}
    assert leaves - covered - NOT_HERE == set()


# (argv, attribute, the parsed value)
GOOD: list[tuple[list[str], str, object]] = [
    (["gate", "007"], "version", "7"),
    (["approve", "3", "--by", " ann ", "--reason", "gain +0.04"], "by", "ann"),
    (["rollback", "--by", "oncall", "--reason", "latency"], "reason", "latency"),
    (["predict", "--version", "2", "hello"], "model_version", "2"),
    (["predict", "--alias", "Challenger", "hi"], "alias", "challenger"),
    (["run", "--approval-timeout", "0"], "approval_timeout", 0),
    (["schedule", "--cron", "0  3 * * 1"], "cron", "0 3 * * 1"),
    (["train", "--max-steps", "-1"], "max_steps", -1),
    (["train", "--accelerator", "CPU"], "accelerator", "cpu"),
    (["train", "--rows-per-domain", "0"], "rows_per_domain", 0),
    (["demo", "--domain", "claritin", "--max-rows", "10"], "max_rows", 10),
    (["ingest", DIR, FILE], "paths", [Path(DIR), Path(FILE)]),
    (["audit", "show", "--action", "rollback"], "action", "rollback"),
    (["status"], "params", Path("params.yaml")),  # the default is checked when used, not here
]


@pytest.mark.parametrize(("argv", "name", "value"), GOOD, ids=[" ".join(a)[:40] for a, *_ in GOOD])
def test_good_arguments_parse(argv: list[str], name: str, value: object) -> None:
    assert getattr(build_parser().parse_args(argv), name) == value


def test_bad_argument_fails_before_anything_heavy_is_imported() -> None:
    code = (
        "import sys\n"
        "from mlra.cli import main\n"
        "try:\n"
        "    main(['run', '--approval-timeout', '-5'])\n"
        "except SystemExit as e:\n"
        "    heavy = [m for m in ('prefect', 'torch', 'mlflow', 'lightning', 'pandas')"
        " if m in sys.modules]\n"
        "    print(e.code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    assert "invalid number of seconds '-5'" in done.stderr and "Traceback" not in done.stderr
