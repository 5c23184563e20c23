"""The audit trail: an append-only, hash-chained log of every decision about every adapter version.

Each record is one JSON object: ``seq`` (0, 1, 2, ...), ``time`` (UTC, ISO 8601), ``actor`` (who or
what acted: a person, ``policy:automatic``, ``pipeline``), ``action`` (one of :data:`ACTIONS`),
``subject`` (what it acted on: a file, a run, a model version), ``details``, ``prev_hash`` (the
previous record's ``hash``; 64 zeros for the first) and ``hash`` (sha256 of the record's canonical
JSON without ``hash``). Editing, deleting, inserting or reordering any record breaks the chain at
that record, and :func:`verify` names it. Cutting records off the end leaves a valid shorter chain;
callers anchor it by storing record hashes elsewhere (the registry tags each model version with the
hash of its registration record) and pass those anchors to :func:`verify`.

Two backends, one behaviour:

- :class:`FileTrail` (default): JSON Lines; appends hold a file lock, so concurrent processes on one
  machine interleave whole records and never fork the chain.
- :class:`SqlTrail`: one table in any SQLAlchemy database (PostgreSQL for teams, SQLite in tests);
  ``seq`` is the primary key, so two writers racing for the same position cannot both win — the
  loser re-reads the head and retries.

Values are stored as given (JSON escapes them, so no name or reason can break a record), except
anything that looks like a secret, which :func:`redact` replaces before it is written.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from mlra._hashing import canonical_json, sha256_hex
from mlra.errors import ConfigError, MlraError
from mlra.redact import redact  # re-exported: callers import redact from here

__all__ = [
    "ACTIONS",
    "GENESIS",
    "AuditRecord",
    "FileTrail",
    "SqlTrail",
    "Trail",
    "Verification",
    "default_trail",
    "open_trail",
    "redact",
    "verify",
]

ACTIONS: Final = (
    "ingest",
    "validation",
    "training",
    "evaluation",
    "registration",
    "gate",
    "approval_request",  # a retrain flow asked a person for approval (and waited, or timed out)
    "approval",
    "rejection",
    "promotion",
    "rollback",
    "retrain_check",  # the scheduled check: enough new feedback to retrain, or not
    "repair",  # registry aliases and tags put back where the trail says (`mlra repair`)
    "bundle",  # the set of module champions and the router that serves from now on
)
GENESIS: Final = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: str
    actor: str
    action: str
    subject: dict[str, Any]
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Everything the hash covers."""
        data = asdict(self)
        del data["hash"]
        return data

    def expected_hash(self) -> str:
        return sha256_hex(canonical_json(self.body()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> AuditRecord:
        data = json.loads(line)
        if not isinstance(data, dict) or set(data) != set(cls.__dataclass_fields__):
            raise ValueError("not an audit record")
        return cls(**data)

    @classmethod
    def create(
        cls,
        seq: int,
        prev_hash: str,
        actor: str,
        action: str,
        subject: Mapping[str, Any],
        details: Mapping[str, Any],
    ) -> AuditRecord:
        if not isinstance(actor, str) or not actor.strip():
            raise ConfigError(f"an audit record needs an actor (who acted), got {actor!r}")
        if action not in ACTIONS:
            raise ConfigError(f"unknown audit action {action!r}; one of: {', '.join(ACTIONS)}")
        body = {
            "seq": seq,
            "time": datetime.now(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "subject": redact(dict(subject)),
            "details": redact(dict(details)),
            "prev_hash": prev_hash,
        }
        try:  # JSON round trip: what is hashed is exactly what a reader gets back
            body = json.loads(canonical_json(body))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"audit subject/details must be JSON-serialisable: {exc}") from exc
        return cls(**body, hash=sha256_hex(canonical_json(body)))


@dataclass(frozen=True)
class Verification:
    intact: bool
    records: int
    head: str  # hash of the last record (GENESIS for an empty trail)
    first_bad: int | None = None  # index (line/row order, 0-based) of the first bad record
    reason: str = ""

    def __str__(self) -> str:
        if self.intact:
            return f"intact: {self.records} records, head {self.head[:12]}"
        return f"BROKEN at record {self.first_bad}: {self.reason}"


def verify(
    records: Iterable[AuditRecord | str], anchors: Mapping[str, int] | None = None
) -> Verification:
    """Check the chain: each record's hash, its ``seq`` and its link to the one before.

    ``records`` are in stored order (records or their JSON lines). ``anchors`` maps record hashes
    known from elsewhere to their ``seq``: each must be in the chain at that position, which
    catches records cut off the end.
    """
    prev, count = GENESIS, 0
    seen: dict[str, int] = {}
    for index, item in enumerate(records):
        try:
            record = item if isinstance(item, AuditRecord) else AuditRecord.from_json(item)
        except (ValueError, TypeError) as exc:
            return Verification(False, index, prev, index, f"unreadable record ({exc})")
        if record.expected_hash() != record.hash:
            return Verification(False, index, prev, index, "its content does not match its hash")
        if record.seq != index:
            return Verification(
                False, index, prev, index, f"seq {record.seq} where {index} was expected"
            )
        if record.prev_hash != prev:
            return Verification(
                False, index, prev, index, "prev_hash does not match the record before it"
            )
        prev, count = record.hash, index + 1
        seen[record.hash] = record.seq
    for anchor, seq in (anchors or {}).items():
        if seen.get(anchor) != seq:
            return Verification(
                False,
                count,
                prev,
                min(seq, count),
                f"anchored record {seq} ({anchor[:12]}) is missing",
            )
    return Verification(True, count, prev)


class Trail(Protocol):
    """What both backends offer."""

    location: str

    def append(
        self,
        actor: str,
        action: str,
        subject: Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord: ...

    def records(self) -> list[AuditRecord]: ...

    def verify(self, anchors: Mapping[str, int] | None = None) -> Verification: ...

    def exists(self) -> bool: ...


def history(trail: Trail, **subject: Any) -> list[AuditRecord]:
    """The records whose subject has every given key with the given value (as a string)."""
    want = {k: str(v) for k, v in subject.items()}
    return [r for r in trail.records() if all(str(r.subject.get(k)) == v for k, v in want.items())]


class FileTrail:
    """The trail as a JSON Lines file, appended under a file lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from mlra.witness import default_witness

        self.path = Path(path)
        self.location = str(self.path)
        self.witness = default_witness(self.path)  # signed head checkpoints (mlra.witness)

    def _lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield line

    def _last_line(self) -> str | None:
        """The last non-empty line, read backwards from the end (appends stay O(1))."""
        if not self.path.exists():
            return None
        with self.path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            tail, pos = b"", end
            while pos > 0:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                tail = f.read(step) + tail
                lines = tail.rstrip(b"\n").split(b"\n")
                if len(lines) > 1 or pos == 0:
                    return lines[-1].decode("utf-8") if lines[-1].strip() else None
        return None

    def _head(self) -> tuple[int, str]:
        last = self._last_line()
        if last is None:
            return 0, GENESIS
        try:
            record = AuditRecord.from_json(last)
        except ValueError as exc:
            raise MlraError(
                f"the audit trail {self.path} ends in an unreadable line; run `mlra audit verify`"
            ) from exc
        return record.seq + 1, record.hash

    def append(
        self,
        actor: str,
        action: str,
        subject: Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock", timeout=60):
            seq, prev = self._head()
            record = AuditRecord.create(seq, prev, actor, action, subject, details or {})
            with self.path.open("a", encoding="utf-8") as f:
                f.write(record.to_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.witness.checkpoint(record.seq, record.hash, record.time)
        return record

    def records(self) -> list[AuditRecord]:
        return [AuditRecord.from_json(line) for line in self._lines()]

    def verify(self, anchors: Mapping[str, int] | None = None) -> Verification:
        """The chain, the given anchors (the registry's) and the witness's signed checkpoints."""
        return _verify_witnessed(self._lines(), anchors, self.witness, self.exists())

    def exists(self) -> bool:
        """Whether the trail file is there (a missing trail is never "intact: 0 records")."""
        return self.path.is_file()


class SqlTrail:
    """The trail as rows of one table in a SQLAlchemy database (PostgreSQL for a team)."""

    TABLE: Final = "mlra_audit"

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.location = redact(url)
        self._engine = sa.create_engine(url, future=True)
        meta = sa.MetaData()
        self._table = sa.Table(
            self.TABLE,
            meta,
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
            sa.Column("record", sa.Text, nullable=False),
        )
        self._meta = meta
        self._created = False
        witness = os.environ.get("MLRA_AUDIT_WITNESS")  # a database trail's second anchor
        from mlra.witness import Witness

        self.witness = Witness(witness) if witness else None

    def _create(self) -> None:
        """Create the table on first write (reading a mistyped URL must not create a trail)."""
        import sqlalchemy as sa

        if self._created:
            return
        try:
            self._meta.create_all(self._engine)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
            # another process created the table at the same moment (PostgreSQL reports the race
            # as a duplicate type or table, SQLite as "table already exists"); it exists now,
            # and anything else raises again here
            self._meta.create_all(self._engine)
        self._created = True

    def exists(self) -> bool:
        import sqlalchemy as sa

        return bool(sa.inspect(self._engine).has_table(self.TABLE))

    def append(
        self,
        actor: str,
        action: str,
        subject: Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        import sqlalchemy as sa

        for attempt in range(100):
            try:
                self._create()  # on first write; a busy or racing database retries below
                with self._engine.begin() as conn:  # rolls back on any exception
                    row = conn.execute(
                        sa.select(self._table.c.seq, self._table.c.hash)
                        .order_by(self._table.c.seq.desc())
                        .limit(1)
                    ).first()
                    seq, prev = (row.seq + 1, row.hash) if row else (0, GENESIS)
                    record = AuditRecord.create(seq, prev, actor, action, subject, details or {})
                    conn.execute(
                        self._table.insert().values(
                            seq=seq, hash=record.hash, record=record.to_json()
                        )
                    )
                if self.witness is not None:
                    self.witness.checkpoint(record.seq, record.hash, record.time)
                return record
            except (sa.exc.IntegrityError, sa.exc.OperationalError):
                # another writer took this seq (or holds SQLite's lock): re-read the head, retry
                time.sleep(0.005 * (attempt + 1))
        raise MlraError(
            f"could not append to the audit trail at {self.location}: too much contention"
        )

    def _rows(self) -> Sequence[str]:
        import sqlalchemy as sa

        if not self.exists():
            return []
        with self._engine.connect() as conn:
            return [
                r.record
                for r in conn.execute(sa.select(self._table.c.record).order_by(self._table.c.seq))
            ]

    def records(self) -> list[AuditRecord]:
        return [AuditRecord.from_json(line) for line in self._rows()]

    def verify(self, anchors: Mapping[str, int] | None = None) -> Verification:
        rows = self._rows()
        if self.witness is None:
            return verify(rows, anchors)
        return _verify_witnessed(rows, anchors, self.witness, bool(rows))


def _verify_witnessed(
    lines: Iterable[AuditRecord | str],
    anchors: Mapping[str, int] | None,
    witness: Any,
    has_records: bool,
) -> Verification:
    """:func:`verify` with the witness's checkpoints as anchors too; a witness that is gone
    while the trail has records, or whose checkpoints do not verify, is a failure."""
    lines = list(lines)
    if not witness.exists():
        if lines and has_records:
            return Verification(
                False, len(lines), GENESIS, 0,
                f"the head checkpoints {witness.location} are missing (the trail's second "
                "anchor, mlra.witness): restore them",
            )  # fmt: skip
        return verify(lines, anchors)
    extra, problem = witness.anchors()
    if problem is not None:
        return Verification(False, len(lines), GENESIS, 0, problem)
    return verify(lines, {**extra, **(anchors or {})})


def open_trail(location: str | os.PathLike[str]) -> FileTrail | SqlTrail:
    """A trail from a location: a database URL (``postgresql+psycopg2://…``, ``sqlite:///…``) or a
    file path."""
    text = str(location)
    if re.match(r"^[a-z][a-z0-9+]*://", text):
        return SqlTrail(text)
    return FileTrail(text)


def default_trail() -> FileTrail | SqlTrail:
    """``$MLRA_AUDIT`` (a path or database URL), else ``<project>/.mlra/audit.jsonl``."""
    from mlra._env import project_dir

    return open_trail(os.environ.get("MLRA_AUDIT") or project_dir() / "audit.jsonl")
