"""The audit trail: every kind of tampering is caught, concurrent appends never fork the chain."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from mlra.audit import GENESIS, AuditRecord, FileTrail, SqlTrail, open_trail, verify
from mlra.errors import ConfigError


def _filled(path: Path, n: int = 5) -> FileTrail:
    trail = FileTrail(path)
    for i in range(n):
        trail.append("pipeline", "training", {"run": f"r{i}"}, {"step": i})
    return trail


def test_records_chain_and_verify(tmp_path: Path) -> None:
    trail = _filled(tmp_path / "audit.jsonl")
    records = trail.records()
    assert [r.seq for r in records] == list(range(5))
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    result = trail.verify()
    assert result.intact and result.records == 5 and result.head == records[-1].hash


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("tamper", "first_bad", "reason"),
    [
        ("edit", 2, "does not match its hash"),
        ("edit_and_rehash", 2, "prev_hash"),  # a forger recomputes the edited record's hash
        ("delete", 2, "seq 3 where 2"),
        ("insert", 2, "seq"),
        ("reorder", 1, "seq 2 where 1"),
        ("garbage", 3, "unreadable"),
    ],
)
def test_every_kind_of_tampering_is_caught(
    tmp_path: Path, tamper: str, first_bad: int, reason: str
) -> None:
    path = tmp_path / "audit.jsonl"
    _filled(path)
    lines = _lines(path)
    if tamper == "edit":
        lines[2] = lines[2].replace('"pipeline"', '"mallory"')
    elif tamper == "edit_and_rehash":
        # rewrite record 2 with a valid hash of its own: record 3 no longer links to it
        record = json.loads(lines[2])
        record["actor"] = "mallory"
        body = {k: v for k, v in record.items() if k != "hash"}
        forged = AuditRecord(**body, hash="")
        lines[2] = json.dumps({**body, "hash": forged.expected_hash()}) + "\n"
        first_bad = 3
    elif tamper == "delete":
        del lines[2]
    elif tamper == "insert":
        lines.insert(2, lines[1])
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "garbage":
        lines[3] = "{not json\n"
    path.write_text("".join(lines))
    result = FileTrail(path).verify()
    assert not result.intact and result.first_bad == first_bad
    assert reason in result.reason


def test_truncation_is_caught_through_an_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = _filled(path)
    last = trail.records()[-1]
    path.write_text("".join(_lines(path)[:-1]))
    assert verify(_lines(path)).intact  # a shorter chain is still a chain ...
    result = verify(_lines(path), anchors={last.hash: last.seq})  # ... but not the registry's
    assert not result.intact and "anchored record 4" in result.reason
    # ... nor the one the signed head checkpoints (mlra.witness) know, without any anchor given
    result = trail.verify()
    assert not result.intact and "anchored record 4" in result.reason


def test_the_head_checkpoints_catch_a_consistent_rewrite(tmp_path: Path) -> None:
    from mlra._hashing import canonical_json, sha256_hex

    path = tmp_path / "audit.jsonl"
    trail = _filled(path)
    records = [json.loads(line) for line in _lines(path)]
    records[1]["actor"] = "mallory"
    prev = GENESIS
    for record in records:  # every hash recomputed: the chain itself is valid again
        record["prev_hash"] = prev
        record.pop("hash")
        record["hash"] = prev = sha256_hex(canonical_json(record))
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert verify(_lines(path)).intact
    assert "anchored record" in trail.verify().reason
    heads = tmp_path / "audit.jsonl.heads"
    lines = heads.read_text().splitlines()
    forged = json.loads(lines[-1]) | {"hash": records[-1]["hash"]}
    heads.write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    assert "does not verify" in trail.verify().reason  # a checkpoint edited without the key
    heads.unlink()
    assert "are missing" in trail.verify().reason


def test_values_are_stored_as_given_and_secrets_are_not(tmp_path: Path) -> None:
    trail = FileTrail(tmp_path / "audit.jsonl")
    reason = 'ok"}\n{"seq": 99, "actor": "x"} — ünïcödé ✓'
    trail.append(
        "Zoë O'Brien",
        "approval",
        {"version": 3},
        {
            "reason": reason,
            "password": "hunter2",
            "tracking_uri": "postgresql://mlra:s3cret@db:5432/mlflow",
            "nested": {"api_key": "abc", "fine": 1},
            "passed": True,
            "author": "Ann",
            "DB_PASSWD": "x",
            "Authorization": "Bearer abc",
        },
    )
    (record,) = trail.records()
    assert record.actor == "Zoë O'Brien" and record.details["reason"] == reason
    assert record.details["password"] == "***" and record.details["nested"]["api_key"] == "***"
    assert record.details["DB_PASSWD"] == "***" and record.details["Authorization"] == "***"
    assert record.details["passed"] is True and record.details["author"] == "Ann"
    assert record.details["tracking_uri"] == "postgresql://mlra:***@db:5432/mlflow"
    assert "hunter2" not in (tmp_path / "audit.jsonl").read_text()
    assert "s3cret" not in (tmp_path / "audit.jsonl").read_text()
    assert trail.verify().intact


@pytest.mark.parametrize(
    ("actor", "action", "message"),
    [("", "approval", "actor"), ("ann", "delete_everything", "delete_everything")],
)
def test_bad_records_are_refused(tmp_path: Path, actor: str, action: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FileTrail(tmp_path / "a.jsonl").append(actor, action, {})
    with pytest.raises(ConfigError, match="JSON"):
        FileTrail(tmp_path / "a.jsonl").append("ann", "approval", {"x": object()})


def _append_many(location: str, worker: int, n: int) -> None:
    trail = open_trail(location)
    for i in range(n):
        trail.append(f"worker-{worker}", "gate", {"i": i})


@pytest.mark.parametrize("backend", ["file", "sqlite"])
def test_concurrent_writers_never_fork_the_chain(tmp_path: Path, backend: str) -> None:
    location = (
        str(tmp_path / "audit.jsonl") if backend == "file" else f"sqlite:///{tmp_path}/audit.db"
    )
    open_trail(location)  # create the table before the race
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(location, w, 15)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    trail = open_trail(location)
    result = trail.verify()
    assert result.intact and result.records == 60
    assert {r.actor for r in trail.records()} == {f"worker-{w}" for w in range(4)}


def test_sql_backend_catches_tampering(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/audit.db"
    trail = SqlTrail(url)
    for i in range(3):
        trail.append("pipeline", "ingest", {"file": f"f{i}.jsonl"})
    assert trail.verify().intact
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE mlra_audit SET record = replace(record, 'f1.jsonl', 'f9.jsonl')")
        )
    result = trail.verify()
    assert not result.intact and result.first_bad == 1


def test_verify_accepts_lines_and_records_alike(tmp_path: Path) -> None:
    trail = _filled(tmp_path / "audit.jsonl", 3)
    assert verify(trail.records()) == verify(_lines(tmp_path / "audit.jsonl"))


def test_cli_verify_and_show(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = FileTrail(path)
    trail.append("ann", "approval", {"model": "m", "version": 3}, {"reason": "better on nfl"})
    trail.append("pipeline", "promotion", {"model": "m", "version": 4})

    def mlra(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        # a store of its own (none yet): other tests' models must not be checked against it
        store = f"sqlite:///{tmp_path / 'mlruns.db'}"
        return subprocess.run(
            [sys.executable, "-m", "mlra.cli", "audit", *args, "--path", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": store},
        )

    ok = mlra("verify", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout.splitlines()[-1])["records"] == 2
    shown = json.loads(mlra("show", "--version", "3", "--json").stdout)
    assert [r["actor"] for r in shown] == ["ann"]
    path.write_text(path.read_text().replace("better", "worse"))
    broken = mlra("verify")
    assert broken.returncode == 1 and "BROKEN at record 0" in broken.stdout
