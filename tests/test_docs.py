"""The documentation's examples work. Every command of a shell block and every python block of
README.md and docs/*.md is either run here, in a temporary project, or listed below as not
runnable here with the reason; a new or changed example that is in neither list fails
:func:`test_every_example_is_run_or_excused`. Every ``mlra`` line also goes through the real
parser, excused or not (a wrong option fails here, not in a reader's shell)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docs_blocks import REPO, Command, PythonBlock, commands, python_blocks
from tests.registry_helpers import template_db

__all__ = ["template_db"]  # a fixture used by name

# -- what is not run here, and why ---------------------------------------------------------------
_MINUTES = (
    "a whole retrain (ingest … train … promote): minutes; tests/flows/test_retrain.py runs it"
)
_SERVER = "runs until stopped and needs a Prefect server; tests/services/ run one"
_DVC = "tests/test_dvc.py::test_repro_in_a_fresh_clone runs it in a fresh clone (git, DVC)"
_DVC_ALL = "runs the train and evaluate stages too: minutes on the real base model"
_MODULAR = (
    "needs a project in modular mode (trained modules, a router, bundle records in the trail): "
    "tests/flows/test_modular_retrain.py and tests/test_modules.py run these commands there"
)
NOT_HERE: dict[tuple[str, str], str] = {
    ("README.md", "make run"): "installs into .venv, then " + _MINUTES,
    ("README.md", "make test"): "the whole suite, this test included",
    ("README.md", "make lint"): "the linters over the repository: CI runs them (make test)",
    ("README.md", "make fast"): "the suite itself",
    ("README.md", ".venv/bin/pytest -k route"): "the suite itself",
    ("README.md", "dvc repro validate"): _DVC,
    ("README.md", "dvc metrics show"): _DVC,
    ("README.md", "dvc params diff"): _DVC,
    ("README.md", "mlra train"): "trains on the real MiniLM: minutes (tests/test_training.py "
    "trains tiny models)",
    ("README.md", "mlra evaluate"): "every golden slice through the real MiniLM: ~80 s "
    "(tests/test_evaluation.py)",
    ("README.md", "mlra ui"): "starts both UIs and runs until stopped (tests/flows/test_ui.py)",
    ("README.md", "mlra run"): _MINUTES,
    ("README.md", "mlra schedule"): _SERVER,
    ("README.md", "prefect deploy --all"): "needs a Prefect server and work pool "
    "(tests/flows/test_deployments.py checks prefect.yaml)",
    ("docs/data.md", "source .venv/bin/activate"): "shell set-up: puts mlra on PATH",
    ("docs/data.md", "dvc repro validate"): _DVC,
    ("docs/data.md", "dvc metrics show"): _DVC,
    ("docs/data.md", "dvc params diff"): _DVC,
    ("docs/data.md", "dvc status"): _DVC,
    ("docs/pipeline.md", "mlra run"): _MINUTES,
    ("docs/pipeline.md", "mlra run --json"): _MINUTES,
    ("docs/pipeline.md", "mlra run --no-simulate"): _MINUTES,
    ("docs/pipeline.md", "mlra run --approval-timeout 0"): _MINUTES,
    ("docs/pipeline.md", "prefect server start &"): _SERVER,
    ("docs/pipeline.md", "export PREFECT_API_URL=http://127.0.0.1:4200/api"): _SERVER,
    ("docs/pipeline.md", "mlra schedule"): _SERVER,
    ("docs/pipeline.md", "mlra schedule --cron */30 * * * *"): _SERVER,
    ("docs/pipeline.md", "export MLRA_WORK_POOL=mlra-process MLRA_PROJECT_DIR=$PWD"): _SERVER,
    ("docs/pipeline.md", "prefect work-pool create $MLRA_WORK_POOL --type process"): _SERVER,
    ("docs/pipeline.md", "prefect deploy --all"): _SERVER,
    ("docs/pipeline.md", "prefect worker start --pool $MLRA_WORK_POOL"): _SERVER,
    ("docs/pipeline.md", "prefect deployment run mlra-retrain/mlra-retrain"): _SERVER,
    ("docs/training.md", "mlra train"): "trains on the real MiniLM: minutes",
    ("docs/training.md", "mlra evaluate"): "every golden slice through the real MiniLM: ~80 s",
    ("docs/training.md", "dvc repro"): _DVC_ALL,
    ("docs/adapters.md", "import importlib.util"): "loading SmolLM2 from its GGUF file takes "
    "~30 s; tests/test_decoder_lm.py runs these steps and checks them",
    **{
        ("docs/modules.md", line): _MODULAR
        for line in (
            "mlra modules",
            "mlra bundle show",
            "mlra bundle show --at 2026-12-01",
            "mlra bundle show --history",
            "mlra approve 3 --module nfl --by Ada --reason golden NFL +4 points",
            "mlra rollback --module nfl --by oncall --reason bad answers in the field",
            "mlra status --module nfl",
            "from mlra.bundle import Bundle",
        )
    },
    **{
        ("README.md", line): _MODULAR
        for line in (
            "mlra modules",
            "mlra bundle show --at 2026-12-01",
            "mlra approve 3 --module nfl --by NAME --reason TEXT",
            "mlra predict --domain nfl what a game",
        )
    },
}

# -- what is run, and in which project -----------------------------------------------------------
DATA = frozenset({"prepare", "feedback", "ingest", "validate"})  # a copy of the project's files
REGISTRY = frozenset(  # a project whose v1 (a MiniLM adapter) serves
    {"register", "gate", "approve", "reject", "promote", "rollback", "repair", "predict",
     "status", "audit", "keys"}
)  # fmt: skip
# Lines of a list of alternatives that the state left by the lines before them refuses.
REFUSED: dict[tuple[str, str], tuple[str, str]] = {
    ("README.md", "mlra promote VERSION"): (
        "is already the champion",
        "the `approve` above promoted it; `promote` is for a version approved with --no-promote",
    ),
    ("docs/governance.md", "mlra reject 7 --by Ada Lovelace --reason batch 3 labels are suspect"): (
        "is the champion",
        "the alternative to the `approve` above, which promoted v7",
    ),
    ("docs/governance.md", "mlra promote 7"): (
        "is already the champion",
        "the `approve` above promoted it",
    ),
}
# What a reader types instead of a placeholder ("VERSION", "7": the version registered last).
VALUES = {"NAME": "Ada", "TEXT": "reviewed", "ADAPTER_DIR": "artifacts/other/adapter"}
VERSION_WORDS = frozenset({"VERSION", "7"})

_TINY = """
import mlra
from transformers import AutoModel
from mlra.classifier import SentenceClassifier
from tests.conftest import make_tiny_bert
folder = "base"                                  # the page's base model: a tiny random BertModel
make_tiny_bert().save_pretrained(folder)
spec = mlra.AdapterSpec(rank=4, alpha=8.0, targets=["query", "value"])
"""
_SAVED = """
trained = AutoModel.from_pretrained(folder)
mlra.add_adapter(trained, "airline", spec)
mlra.save_adapter(trained, "airline", "artifacts/airline")
"""
# The names a python block takes from the page's text, set up before it runs; "" : none.
PRELUDES: dict[tuple[str, str], str] = {
    ("README.md", "import torch"): "",
    ("docs/artifact.md", "import mlra"): _TINY + "model = AutoModel.from_pretrained(folder)\n"
    "mlra.add_adapter(model, 'airline', spec)\nother_model = AutoModel.from_pretrained(folder)\n",
    ("docs/artifact.md", 'mlra.save_adapter(model, "airline", path, modules_to_save=["head"])'): (
        _TINY + "model = SentenceClassifier(AutoModel.from_pretrained(folder), 3)\n"
        "mlra.add_adapter(model, 'airline', spec)\npath = 'artifacts/with-head'\n"
    ),
    ("docs/artifact.md", "from mlra.signing import Keyring, sign_artifact, verify_artifact"): (
        _TINY + _SAVED
    ),
    ("docs/artifact.md", "from peft import PeftModel"): _TINY + _SAVED,
    ("docs/artifact.md", "from peft import LoraConfig, get_peft_model"): (
        _TINY + "base = AutoModel.from_pretrained(folder)\n"
    ),
    ("docs/data.md", "from mlra.config import load_params"): "",  # in a copy of the project
}
# Placeholders in a python block, and what the test puts there.
PY_VALUES = {'"q0B5...="': 'keyring.public_key("pipeline")'}
NEEDS_MINILM = frozenset({("README.md", "import torch")})

COMMANDS = commands()
BLOCKS = python_blocks()


def _mlra(c: Command, kinds: frozenset[str]) -> bool:
    return c.words[:1] == ("mlra",) and len(c.words) > 1 and c.words[1] in kinds


def test_every_example_is_run_or_excused() -> None:
    assert len(COMMANDS) >= 40 and len(BLOCKS) >= 6  # a lost block shows here
    for c in COMMANDS:
        if (c.page, c.key) not in NOT_HERE:
            assert _mlra(c, DATA | REGISTRY), (
                f"{c.page}: `{c.key}` is neither run by this test nor listed in NOT_HERE with a "
                "reason: add it to a project that runs it, or to NOT_HERE"
            )
    for b in BLOCKS:
        assert ((b.page, b.key) in PRELUDES) != ((b.page, b.key) in NOT_HERE), (
            f"{b.page}: the python block `{b.key}` must be in one of PRELUDES (run), NOT_HERE"
        )
    for reason in NOT_HERE.values():  # a test named as running an example must exist
        for path, test in re.findall(r"(tests/[\w/]*\.py)(?:::(\w+))?", reason):
            assert (REPO / path).exists(), f"{path} (named in NOT_HERE) does not exist"
            assert not test or f"def {test}(" in (REPO / path).read_text(encoding="utf-8")
    named = {(c.page, c.key) for c in COMMANDS} | {(b.page, b.key) for b in BLOCKS}
    stale = sorted((set(NOT_HERE) | set(PRELUDES) | set(REFUSED)) - named)
    assert stale == [], f"listed examples that the docs no longer hold: {stale}"


PLACEHOLDERS = {**VALUES, **dict.fromkeys(VERSION_WORDS, "7")}
PARSED = [c for c in COMMANDS if c.words[:1] == ("mlra",)]


@pytest.mark.parametrize("command", PARSED, ids=[c.key[:60] for c in PARSED])
def test_every_documented_command_parses(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlra.cli import build_parser

    argv = [PLACEHOLDERS.get(w, w) for w in command.words[1:]]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: a usage error (2); --help would be 0
        error = capsys.readouterr().err.strip().splitlines()[-1]
        if "no such file" in error or "no such folder" in error:
            return  # a path of the reader's project: everything else about the line parsed
        pytest.fail(f"{command.page}: `{command.key}` is refused (exit {exc.code}): {error}")
    assert getattr(args, "func", None) is not None, f"{command.page}: `{command.key}` runs nothing"


# -- running them ----------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of what a clone holds that the commands read, as the working folder; the project's
    default stores (``.mlra/``); keys in the project, never the user's."""
    root = tmp_path / "project"
    for name in ("params.yaml", "dvc.yaml", ".dvcignore", ".dvc/config"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    (root / "data" / "inbox").mkdir(parents=True)
    for name in ("MLRA_HOME", "MLFLOW_TRACKING_URI", "MLRA_AUDIT", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLRA_KEYS", str(root / "keys"))
    monkeypatch.chdir(root)
    yield root


def _run(c: Command, cwd: Path, capsys: pytest.CaptureFixture[str], latest: str) -> int:
    """One documented ``mlra`` line, in-process (the shell's quoting and globs already applied)."""
    from mlra.cli import main

    values = {**VALUES, **dict.fromkeys(VERSION_WORDS, latest)}
    code = main(c.argv(values, cwd))
    out = capsys.readouterr()
    refused = REFUSED.get((c.page, c.key))
    if refused is None:
        assert code == 0, f"{c.page}: `{c.key}` failed ({code}):\n{out.out[-2000:]}{out.err}"
    else:
        assert code == 1 and refused[0] in out.err, f"{c.page}: `{c.key}`: {out.err}"
    return code


def test_the_data_commands_run(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran = [c for c in COMMANDS if (c.page, c.key) not in NOT_HERE and _mlra(c, DATA)]
    assert len(ran) >= 5
    for c in ran:
        _run(c, project, capsys, "1")
    assert (project / "reports" / "validation" / "report.json").is_file()
    assert any((project / "data" / "feedback" / "accepted").iterdir())


@pytest.mark.integration
def test_the_registry_commands_run(
    project: Path, template_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a project whose v1 serves (registered and promoted through the CLI), with the files
    the lines name (MiniLM adapters, evaluation metrics against v1, a validation report)."""
    from tests.docs_setup import registry_project

    registry_project(project, template_db, capsys)
    latest = 1
    ran = [c for c in COMMANDS if (c.page, c.key) not in NOT_HERE and _mlra(c, REGISTRY)]
    assert len(ran) >= 20
    for c in ran:
        if _run(c, project, capsys, str(latest)) == 0 and c.words[1] == "register":
            latest += 1
    from mlra.registry import Registry

    registry = Registry(read_only=True)
    assert registry.resolve("champion") == "1" and len(registry.versions()) == latest


def _params(block: PythonBlock) -> Any:
    marks = [pytest.mark.integration] if (block.page, block.key) in NEEDS_MINILM else []
    return pytest.param(block, marks=marks, id=f"{block.page}:{block.key[:40]}")


@pytest.mark.parametrize(
    "block", [_params(b) for b in BLOCKS if (b.page, b.key) in PRELUDES]
)  # fmt: skip
def test_the_python_examples_run(block: PythonBlock, project: Path) -> None:
    """As printed (placeholders filled in), after the set-up its page's text implies."""
    code = block.code
    for placeholder, value in PY_VALUES.items():
        code = code.replace(placeholder, value)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(PRELUDES[(block.page, block.key)], "prelude", "exec"), namespace)
    exec(compile(code, block.page, "exec"), namespace)
