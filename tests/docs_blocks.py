"""The fenced examples of README.md and docs/*.md, as tests/test_docs.py runs them: shell blocks
(``bash``, ``sh``, ``shell``, ``console``) cut into commands, python blocks whole.

A shell command is named by its page and its words (continuations joined, the comment dropped:
``mlra gate VERSION``); a python block by its page and first line. Those names are what
tests/test_docs.py lists, so a changed or new example is one that no list names yet."""

from __future__ import annotations

import glob
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
SHELLS = frozenset({"bash", "sh", "shell", "console"})
SEPARATORS = frozenset({";", "&&", "||"})


def pages() -> list[Path]:
    """README.md and every page of docs/, in the order a reader meets them."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Command:
    page: str  # relative to the repository: README.md, docs/governance.md
    words: tuple[str, ...]  # as the shell splits them ("&" kept: run in the background)

    @property
    def key(self) -> str:
        return " ".join(self.words)

    def argv(self, values: dict[str, str], cwd: Path) -> list[str]:
        """The ``mlra`` arguments with placeholders replaced and globs expanded (as a shell)."""
        out: list[str] = []
        for word in self.words[1:]:
            word = values.get(word, word)
            found = sorted(glob.glob(word, root_dir=cwd)) if glob.has_magic(word) else []
            out += [str(Path(f)) for f in found] or [word]
        return out


@dataclass(frozen=True)
class PythonBlock:
    page: str
    code: str

    @property
    def key(self) -> str:
        return self.code.strip().splitlines()[0]


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def commands() -> list[Command]:
    """Every command of every shell block, in page order (``a; b`` are two)."""
    found = []
    for path in pages():
        for lang, body in FENCE.findall(path.read_text(encoding="utf-8")):
            if lang not in SHELLS:
                continue
            lines = body.replace("\\\n", " ").splitlines()
            if lang == "console":  # only the prompted lines are commands
                lines = [x[2:] for x in lines if x.startswith("$ ")]
            for line in lines:
                current: list[str] = []
                for word in [*_words(line), ";"]:
                    if word in SEPARATORS:
                        if current:
                            found.append(Command(_name(path), tuple(current)))
                        current = []
                    else:
                        current.append(word)
    return found


def python_blocks() -> list[PythonBlock]:
    return [
        PythonBlock(_name(path), body)
        for path in pages()
        for lang, body in FENCE.findall(path.read_text(encoding="utf-8"))
        if lang == "python"
    ]
