"""``mlra audit show``: a table that fits the terminal, long values cut with a marker (whole with
``--full``), names printed literally even when they look like Rich markup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlra.audit import FileTrail
from mlra.cli import main
from mlra.cli.audit import CUT_AT

LONG = "slice " * 100  # 600 characters
DIGEST = "0123456789abcdef" * 4


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    t = FileTrail(path)
    t.append("ann [/oops]", "approval", {"model": "m", "version": 3}, {"reason": "[bold]ok[/]"})
    t.append("pipeline", "gate", {"model": "m", "version": 3}, {"detail": LONG, "passed": True})
    t.append("pipeline", "promotion", {"model": "m", "version": 4}, {"previous": "3"})
    t.append("pipeline", "ingest", {"batch": "b-7"}, {"accepted": 60, "sha256": DIGEST})
    return path


def _show(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["audit", "show", "--path", str(path), *args]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("columns", [80, 140])
def test_table_fits_the_terminal_and_marks_what_it_cuts(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    out = _show(trail, capsys)
    assert max(len(line) for line in out.splitlines()) <= columns
    assert "ann [/oops]" in out and "reason: [bold]ok[/]" in out  # literal, not markup
    assert "m v3" in out and "m v4" in out and "batch: b-7" in out
    assert f"…[+{len(LONG) - CUT_AT} chars]" in out  # the cut is marked, with what is missing
    assert "--full shows them whole" in out
    assert "sha256: 0123456789ab…" in out and DIGEST not in out  # digests shortened, marked
    assert out.count("slice") == CUT_AT // len("slice ")  # the first CUT_AT characters only


def test_full_shows_every_value_whole(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    out = _show(trail, capsys, "--full")
    assert "…[+" not in out and "cut at" not in out
    assert out.count("slice") == 100  # whole, only wrapped
    assert "0123456789ab…" not in out and "…" not in out  # digests whole too


def test_filters_and_json(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _show(trail, capsys, "--version", "3", "--action", "gate", "--json")
    records = json.loads(out)
    assert [r["action"] for r in records] == ["gate"] and records[0]["details"]["detail"] == LONG
    table = _show(trail, capsys, "--version", "4")
    assert (
        "(1 record)" in " ".join(table.split()) and "promotion" in table and "approval" not in table
    )
