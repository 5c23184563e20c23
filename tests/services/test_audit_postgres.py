"""The audit trail's SQL backend on a real PostgreSQL server: several real processes opening a new
trail and appending at once form one unbroken chain, and every kind of tampering done with SQL is
found."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlra.audit import SqlTrail, open_trail
from tests.services.conftest import REPO, Services

pytestmark = pytest.mark.services

_APPENDER = """
import sys, time
from pathlib import Path
from mlra.audit import open_trail
url, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
trail = open_trail(url)  # all at once on a new database: each creates the table if missing
for i in range(count):
    trail.append(name, "gate", {"model": "m", "version": str(i)}, {"i": i, "by": name})
print("DONE", name)
"""


def test_concurrent_appends_from_processes_form_one_chain(
    services: Services, tmp_path: Path
) -> None:
    url = services.create_database("audit")
    writers, count = 4, 25
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, url, f"writer-{w}", str(count), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(writers)
    ]
    time.sleep(2.0)  # let them import and connect, then release them together
    go.touch()
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs

    trail = open_trail(url)
    assert isinstance(trail, SqlTrail) and "***" in trail.location  # the password never shows
    records = trail.records()
    assert len(records) == writers * count
    assert [r.seq for r in records] == list(range(writers * count))
    for w in range(writers):  # every append of every writer is there, in its own order
        mine = [r.details["i"] for r in records if r.actor == f"writer-{w}"]
        assert mine == list(range(count))
    result = trail.verify({records[-1].hash: records[-1].seq})
    assert result.intact and result.records == writers * count, result


def _sql(services: Services, url: str, statement: str, *args: Any) -> None:
    conn = services.connect(url.rsplit("/", 1)[1])
    with conn, conn.cursor() as cur:
        cur.execute(statement, args)
    conn.close()


def test_tampering_with_sql_is_found(services: Services) -> None:
    url = services.create_database("audit")
    trail = open_trail(url)
    for i in range(6):
        trail.append("ops", "approval", {"model": "m", "version": str(i)}, {"reason": f"ok {i}"})
    records = trail.records()
    anchors = {records[-1].hash: records[-1].seq}
    assert trail.verify(anchors).intact
    table = SqlTrail.TABLE

    def broken(statement: str, *args: Any, undo: tuple[str, ...] = ()) -> str:
        _sql(services, url, statement, *args)
        result = trail.verify(anchors)
        if undo:
            _sql(services, url, *undo)
        assert not result.intact
        return result.reason

    # an edited record: its text no longer matches its hash
    original = records[2].to_json()
    edited = original.replace('"actor": "ops"', '"actor": "mallory"')
    assert edited != original
    reason = broken(
        f"UPDATE {table} SET record = %s WHERE seq = 2",
        edited,
        undo=(f"UPDATE {table} SET record = %s WHERE seq = 2", original),
    )
    assert "does not match its hash" in reason
    assert trail.verify(anchors).intact  # restored

    # two records swapped (rows renumbered so the table still looks gap-free)
    swap = (
        f"UPDATE {table} SET seq = -1 WHERE seq = 1;"
        f"UPDATE {table} SET seq = 1 WHERE seq = 3;"
        f"UPDATE {table} SET seq = 3 WHERE seq = -1"
    )
    assert "seq" in broken(swap, undo=(swap,))
    assert trail.verify(anchors).intact

    # the last record cut off: a valid shorter chain, caught only by the anchor
    last = records[-1]
    assert "is missing" in broken(f"DELETE FROM {table} WHERE seq = %s", last.seq)
    # a record deleted from the middle
    assert "seq" in broken(f"DELETE FROM {table} WHERE seq = 1")
