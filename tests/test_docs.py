"""The documentation's examples work: every ``mlra`` command in a bash block of README.md and
docs/ is accepted by the real command-line parser (a wrong option or a command that no longer
exists fails here, not in a reader's shell), and the README's library example runs as printed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.DOTALL)


def _blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for lang, body in BLOCK.findall(path.read_text(encoding="utf-8")):
            if lang == kind:
                found.append((path.name, body))
    return found


def _mlra_commands() -> list[tuple[str, list[str]]]:
    """Each ``mlra …`` line of the bash blocks (continuations joined, comments dropped)."""
    commands = []
    for name, body in _blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["mlra"]:
                commands.append((name, words[1:]))
    return commands


COMMANDS = _mlra_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 20  # the pages document the commands; a lost block shows here


PLACEHOLDERS = {"VERSION": "7", "V": "7", "N": "7"}  # what a reader types instead


@pytest.mark.parametrize(("page", "argv"), COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_every_documented_command_parses(
    page: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from mlra.cli import build_parser

    argv = [PLACEHOLDERS.get(word, word) for word in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: a usage error (2); --help would be 0
        error = capsys.readouterr().err.strip().splitlines()[-1]
        if "no such file" in error or "no such folder" in error:
            return  # a path of the reader's project: everything else about the line parsed
        pytest.fail(f"{page}: `mlra {' '.join(argv)}` is refused (exit {exc.code}): {error}")
    assert getattr(args, "func", None) is not None, f"{page}: `mlra {' '.join(argv)}` runs nothing"


@pytest.mark.integration
def test_the_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "library in five minutes" block, on the packaged base model, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    (_, code), *_ = [b for b in _blocks("python") if b[0] == "README.md"]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the example as printed
