"""Field-feedback ingestion: every row of every file ends up accepted or quarantined, with a reason.

``ingest(paths, store_dir, params)`` reads JSONL, CSV and Parquet files and checks each row
(required fields, types, label in :data:`~mlra.data.source.LABELS`, text non-empty and within the
length bounds, valid UTF-8, parseable ``created_at``, ids unique within and across files). The
store it writes::

    store_dir/
      ledger.json             the commit record: one entry per ingest batch, with its files' sha256
      accepted/BATCH.parquet  accepted rows: id, text, label, domain, source, created_at, ...
      quarantine/BATCH.jsonl  rejected rows: original content, reason, file, line

Invariants:

* accepted + quarantined = read, per file and in total. A file that cannot be parsed at all (empty,
  not Parquet, unknown type) counts as one row, quarantined whole.
* A file whose sha256 is in the ledger is skipped: ingesting the same file twice adds nothing.
* Crash safety: batch files are written under temporary names and renamed into place, and the
  ledger, renamed last, is the commit point. Readers go through the ledger only; the next ingest
  deletes any file the ledger does not name (the leftovers of a crash).
"""

# pandas and pyarrow ship no type information (pandas-stubs is not a dependency)
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from mlra.config import Params
from mlra.data.source import LABELS, domain_of, row_id
from mlra.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ACCEPTED_COLUMNS",
    "FileResult",
    "IngestResult",
    "expand_paths",
    "ingest",
    "load_accepted",
    "load_ledger",
    "load_quarantine",
    "newest_batch",
]

ACCEPTED_COLUMNS: Final = (
    "id",
    "text",
    "label",
    "domain",
    "source",
    "created_at",
    "batch",
    "file",
    "line",
)
LEDGER: Final = "ledger.json"
SUFFIXES: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_CSV_FIELD_LIMIT: Final = 1 << 30  # let huge fields through to the length check, with its reason
_BOM: Final = b"\xef\xbb\xbf"


@dataclasses.dataclass(frozen=True)
class Rejection:
    """Why a row was quarantined: a short ``kind`` to count by, and a message naming the value."""

    kind: str
    message: str


@dataclasses.dataclass(frozen=True)
class FileResult:
    """The outcome for one input file. ``status`` is "ingested" or "skipped" (already in ledger)."""

    path: str
    sha256: str
    status: Literal["ingested", "skipped"]
    read: int
    accepted: int
    quarantined: int
    reasons: dict[str, int]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """Totals over all files of one ingest call; ``batch`` is None when nothing new was read."""

    read: int
    accepted: int
    quarantined: int
    files: tuple[FileResult, ...]
    batch: str | None
    store_dir: Path

    def to_dict(self) -> dict[str, Any]:
        """``{"read", "accepted", "quarantined", "files", "batch"}``: what ``--json`` prints."""
        return {
            "read": self.read,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "files": [f.to_dict() for f in self.files],
            "batch": self.batch,
        }


# ----------------------------------------------------------------------------------------- rows


def _type_name(value: object) -> str:
    return type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_timestamp(value: object) -> dt.datetime | Rejection:
    """A timezone-aware UTC datetime from an ISO 8601 string or a datetime; naive means UTC."""
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return Rejection(
                "bad_timestamp", f"created_at {_short(value)} is not an ISO 8601 timestamp"
            )
    else:
        return Rejection(
            "bad_type",
            f"created_at must be an ISO 8601 string, got {_type_name(value)} {_short(value)}",
        )
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


def _present(value: object) -> bool:
    """Not None and not NaN (how pandas and Parquet say "missing")."""
    return value is not None and not (type(value) is float and math.isnan(value))


def check_row(row: Mapping[str, object], params: Params) -> dict[str, Any] | Rejection:
    """Check one feedback row; return the normalised row or the reason it is rejected.

    The normalised row has ``id`` (given, else :func:`~mlra.data.source.row_id` of the text),
    ``text`` (stripped), ``label`` (lower-cased), ``domain`` (given, else
    :func:`~mlra.data.source.domain_of`), ``source`` and ``created_at`` (UTC). Extra fields are
    ignored. Duplicate ids are the caller's business (they need the other rows).
    """
    missing = [f for f in params.ingest.required_fields if not _present(row.get(f))]
    if missing:
        return Rejection("missing_fields", f"missing required fields: {', '.join(missing)}")

    text = row.get("text")
    if not isinstance(text, str):
        return Rejection(
            "bad_type", f"text must be a string, got {_type_name(text)} {_short(text)}"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return Rejection("invalid_utf8", f"text is not valid UTF-8 (at character {exc.start})")
    stripped = text.strip()
    if not stripped:
        kind = "empty text" if text == "" else "whitespace-only text"
        return Rejection("empty_text", f"{kind}: text must be non-empty after stripping")
    bounds = params.data
    if not bounds.text_min_chars <= len(stripped) <= bounds.text_max_chars:
        return Rejection(
            "text_length",
            f"text has {len(stripped):,} characters, outside "
            f"[data.text_min_chars={bounds.text_min_chars}, "
            f"data.text_max_chars={bounds.text_max_chars}]",
        )

    label = row.get("label")
    if not isinstance(label, str):
        return Rejection(
            "bad_type", f"label must be a string, got {_type_name(label)} {_short(label)}"
        )
    norm_label = label.strip().lower()
    if norm_label not in LABELS:
        return Rejection(
            "unknown_label", f"label {_short(label)} is not one of {', '.join(LABELS)}"
        )

    out: dict[str, Any] = {"text": stripped, "label": norm_label}
    for name, derive in (("id", row_id), ("domain", domain_of)):
        value = row.get(name)
        if not _present(value) or value == "":
            out[name] = derive(stripped)
        elif not isinstance(value, str) or not value.strip():
            return Rejection(
                "bad_type",
                f"{name} must be a non-empty string, got {_type_name(value)} {_short(value)}",
            )
        else:
            out[name] = value.strip()
    if len(out["id"]) > params.ingest.max_id_chars:
        return Rejection(
            "bad_id",
            f"id has {len(out['id'])} characters, more than "
            f"ingest.max_id_chars={params.ingest.max_id_chars}",
        )

    source = row.get("source")
    if not _present(source):
        out["source"] = "unknown"
    elif not isinstance(source, str) or not source.strip():
        return Rejection(
            "bad_type",
            f"source must be a non-empty string, got {_type_name(source)} {_short(source)}",
        )
    else:
        out["source"] = source.strip()

    stamp_value = row.get("created_at")
    if not _present(stamp_value):
        out["created_at"] = None
    else:
        stamp = _parse_timestamp(stamp_value)
        if isinstance(stamp, Rejection):
            return stamp
        out["created_at"] = stamp
    for name in ("id", "domain", "source"):
        if not out[name].isascii():
            try:
                out[name].encode("utf-8")
            except UnicodeEncodeError:
                return Rejection("invalid_utf8", f"{name} is not valid UTF-8")
    return out


# ---------------------------------------------------------------------------------------- files

# One parsed row: (line or row number, the row as a mapping, its original content) or a rejection.
Parsed = tuple[int | None, Mapping[str, object] | Rejection, object]


def _whole_file(data: bytes, rejection: Rejection) -> Iterator[Parsed]:
    yield None, rejection, _original(data)


def _original(data: bytes) -> object:
    """The original bytes as JSON-safe content: text when valid UTF-8, else base64."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _read_jsonl(data: bytes) -> Iterator[Parsed]:
    data = data.removeprefix(_BOM)
    for number, raw_line in enumerate(data.split(b"\n"), start=1):
        line = raw_line.rstrip(b"\r")
        if not line.strip():
            continue
        original = _original(line)
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield (
                number,
                Rejection("invalid_utf8", f"invalid UTF-8 at byte {exc.start} of the line"),
                original,
            )
            continue
        try:
            value = json.loads(decoded)
        except json.JSONDecodeError as exc:
            yield (
                number,
                Rejection("malformed_json", f"malformed JSON: {exc.msg} at column {exc.colno}"),
                original,
            )
            continue
        if not isinstance(value, dict):
            yield (
                number,
                Rejection(
                    "malformed_json", f"a JSON line must be an object, got {_type_name(value)}"
                ),
                original,
            )
            continue
        yield number, value, original


def _read_csv(data: bytes, params: Params) -> Iterator[Parsed]:
    # surrogateescape keeps invalid bytes (as lone surrogates) so the row check can name them
    text = data.removeprefix(_BOM).decode("utf-8", errors="surrogateescape")
    previous_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        # (line where the row starts, its cells); blank lines are no rows
        reader = csv.reader(io.StringIO(text, newline=""))
        records: list[tuple[int, list[str]]] = []
        start = 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        yield from _whole_file(data, Rejection("unparseable_file", f"unparseable CSV: {exc}"))
        return
    finally:
        csv.field_size_limit(previous_limit)
    if not records:
        yield from _whole_file(data, Rejection("empty_file", "the CSV file has no header"))
        return
    header = [h.strip().lower() for h in records[0][1]]
    lacking = [f for f in params.ingest.required_fields if f not in header]
    for number, values in records[1:]:
        original: object = dict(zip(header, values, strict=False)) | (
            {"_extra": values[len(header) :]} if len(values) > len(header) else {}
        )
        if lacking:
            yield (
                number,
                Rejection(
                    "wrong_header",
                    f"missing required fields: {', '.join(lacking)} (the CSV header is {header})",
                ),
                original,
            )
        elif len(values) != len(header):
            yield (
                number,
                Rejection(
                    "malformed_csv",
                    f"expected {len(header)} fields (as in the header), got {len(values)}",
                ),
                original,
            )
        else:
            yield number, dict(zip(header, values, strict=True)), original


def _read_parquet(path: Path, data: bytes) -> Iterator[Parsed]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield from _whole_file(
            data, Rejection("unparseable_file", f"not a readable Parquet file: {exc}")
        )
        return
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, row, row


def _read_file(path: Path, data: bytes, params: Params) -> Iterator[Parsed]:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(SUFFIXES))
        yield from _whole_file(
            data,
            Rejection("unsupported_file", f"unsupported file type {path.suffix!r} ({known})"),
        )
    elif not data.strip():
        what = "an empty file (0 bytes)" if not data else "a file of only whitespace"
        yield from _whole_file(data, Rejection("empty_file", what))
    elif kind == "jsonl":
        yield from _read_jsonl(data)
    elif kind == "csv":
        yield from _read_csv(data, params)
    else:
        yield from _read_parquet(path, data)


# ---------------------------------------------------------------------------------------- store


def load_ledger(store_dir: str | Path) -> dict[str, Any]:
    """The store's ledger (``{"format": 1, "batches": [...]}``); empty if there is none yet."""
    path = Path(store_dir) / LEDGER
    if not path.is_file():
        return {"format": 1, "batches": []}
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"the feedback ledger {path} is unreadable: {exc}") from exc
    if not isinstance(ledger, dict) or not isinstance(ledger.get("batches"), list):
        raise DataError(f"the feedback ledger {path} has no 'batches' list")
    return ledger


def _empty_accepted() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype="str") for c in ACCEPTED_COLUMNS}).astype(
        {"created_at": "datetime64[us, UTC]", "line": "Int64"}
    )


def load_accepted(
    store_dir: str | Path,
    batches: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Accepted feedback rows in ledger order: all batches, or only those named in ``batches``.

    ``columns`` limits the columns read (default: all of :data:`ACCEPTED_COLUMNS`).
    """
    import pandas as pd

    store = Path(store_dir)
    wanted = list(columns) if columns is not None else None
    frames = []
    for entry in load_ledger(store)["batches"]:
        if batches is not None and entry["batch"] not in batches:
            continue
        if entry.get("accepted_file"):
            frames.append(pd.read_parquet(store / entry["accepted_file"], columns=wanted))
    if not frames:
        empty = _empty_accepted()
        return empty if wanted is None else empty[wanted]
    return pd.concat(frames, ignore_index=True)


def newest_batch(store_dir: str | Path) -> tuple[str | None, pd.DataFrame]:
    """The newest batch that accepted any rows, and those rows; ``(None, empty)`` if none."""
    entries = [e for e in load_ledger(store_dir)["batches"] if e.get("accepted")]
    if not entries:
        return None, _empty_accepted()
    name = str(entries[-1]["batch"])
    return name, load_accepted(store_dir, [name])


def load_quarantine(store_dir: str | Path) -> list[dict[str, Any]]:
    """Every quarantine record of the store, in ledger order."""
    store = Path(store_dir)
    records: list[dict[str, Any]] = []
    for entry in load_ledger(store)["batches"]:
        if entry.get("quarantine_file"):
            with (store / entry["quarantine_file"]).open(encoding="utf-8") as f:
                records.extend(json.loads(line) for line in f if line.strip())
    return records


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp)``, then rename over ``path``: readers see old or new, not half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clean_orphans(store: Path, ledger: Mapping[str, Any]) -> list[Path]:
    """Delete batch files the ledger does not name (what a crash mid-ingest leaves behind)."""
    named = set()
    for entry in ledger["batches"]:
        for key in ("accepted_file", "quarantine_file"):
            if entry.get(key):
                named.add((store / entry[key]).resolve())
    removed = []
    for folder in (store / "accepted", store / "quarantine"):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and path.resolve() not in named:
                    path.unlink()
                    removed.append(path)
    ledger_tmp = store / (LEDGER + ".tmp")
    if ledger_tmp.exists():
        ledger_tmp.unlink()
        removed.append(ledger_tmp)
    return removed


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the files in folders named (sorted, hidden files skipped)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return files


def _json_safe(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def ingest(
    paths: Iterable[str | Path],
    store_dir: str | Path,
    params: Params,
    *,
    progress: Callable[[Path], None] | None = None,
    _crash_before_commit: bool = False,
) -> IngestResult:
    """Ingest feedback files into the store at ``store_dir``; see the module docstring.

    ``paths`` may name folders (their files are taken, sorted). ``progress`` is called with each
    file before it is read. Raises :class:`~mlra.errors.DataError` only for a path that does not
    exist or a corrupt ledger; bad content never raises, it is quarantined.
    ``_crash_before_commit`` (tests only) stops after the batch files are written, before the
    ledger is, as a crash would.
    """
    from filelock import FileLock

    files = expand_paths(paths)
    store = Path(store_dir)
    store.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store / ".lock")):
        ledger = load_ledger(store)
        _clean_orphans(store, ledger)
        return _ingest_locked(files, store, params, ledger, progress, _crash_before_commit)


def _ingest_locked(
    files: list[Path],
    store: Path,
    params: Params,
    ledger: dict[str, Any],
    progress: Callable[[Path], None] | None,
    crash_before_commit: bool,
) -> IngestResult:
    known_files = {f["sha256"]: e["batch"] for e in ledger["batches"] for f in e["files"]}
    # ids already accepted: id -> the file that brought it
    seen_ids: dict[str, str] = {}
    previous = load_accepted(store, columns=["id", "file"])
    seen_ids.update(zip(previous["id"].astype(str), previous["file"].astype(str), strict=True))

    now = dt.datetime.now(dt.UTC)
    file_results: list[FileResult] = []
    accepted: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    batch_hash = hashlib.sha256()
    for path in files:
        if progress is not None:
            progress(path)
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha in known_files:
            file_results.append(
                FileResult(
                    str(path), sha, "skipped", 0, 0, 0, {}, f"already ingested ({known_files[sha]})"
                )
            )
            continue
        known_files[sha] = "this batch"
        batch_hash.update(sha.encode())
        n_read = n_ok = 0
        reasons: dict[str, int] = {}
        first_line: dict[str, int | None] = {}
        note = ""
        for line, parsed, original in _read_file(path, data, params):
            n_read += 1
            result = parsed if isinstance(parsed, Rejection) else check_row(parsed, params)
            if not isinstance(result, Rejection):
                rid = result["id"]
                if rid in first_line:
                    result = Rejection(
                        "duplicate_id",
                        f"duplicate id {rid!r}: also on line {first_line[rid]} of this file",
                    )
                elif rid in seen_ids:
                    result = Rejection(
                        "duplicate_id",
                        f"duplicate id {rid!r}: already accepted from {seen_ids[rid]}",
                    )
            if isinstance(result, Rejection):
                reasons[result.kind] = reasons.get(result.kind, 0) + 1
                if line is None:
                    note = result.message
                quarantined.append(
                    {
                        "file": path.name,
                        "path": str(path),
                        "file_sha256": sha,
                        "line": line,
                        "kind": result.kind,
                        "reason": result.message,
                        "content": _json_safe(original),
                    }
                )
                continue
            first_line[result["id"]] = line
            n_ok += 1
            accepted.append(result | {"file": path.name, "line": line})
        for rid in first_line:
            seen_ids[rid] = path.name
        file_results.append(
            FileResult(str(path), sha, "ingested", n_read, n_ok, n_read - n_ok, reasons, note)
        )

    total_read = sum(f.read for f in file_results)
    total_ok = sum(f.accepted for f in file_results)
    assert total_ok == len(accepted) and total_read - total_ok == len(quarantined)
    new_files = [f for f in file_results if f.status == "ingested"]
    if not new_files:
        return IngestResult(0, 0, 0, tuple(file_results), None, store)

    batch = f"{now:%Y%m%dT%H%M%S%fZ}-{batch_hash.hexdigest()[:8]}"
    entry: dict[str, Any] = {
        "batch": batch,
        "ingested_at": now.isoformat(timespec="seconds"),
        "read": total_read,
        "accepted": total_ok,
        "quarantined": len(quarantined),
        "accepted_file": None,
        "quarantine_file": None,
        "files": [
            {
                "name": Path(f.path).name,
                "sha256": f.sha256,
                "read": f.read,
                "accepted": f.accepted,
                "quarantined": f.quarantined,
            }
            for f in new_files
        ],
    }
    if accepted:
        entry["accepted_file"] = f"accepted/{batch}.parquet"
        frame = _accepted_frame(accepted, batch)
        _atomic_write(store / entry["accepted_file"], lambda p: frame.to_parquet(p, index=False))
    if quarantined:
        entry["quarantine_file"] = f"quarantine/{batch}.jsonl"
        stamp = now.isoformat(timespec="seconds")
        lines = "".join(
            json.dumps(q | {"batch": batch, "quarantined_at": stamp}) + "\n" for q in quarantined
        )
        _atomic_write(
            store / entry["quarantine_file"],
            lambda p: p.write_text(lines, encoding="utf-8"),
        )
    if crash_before_commit:
        raise SystemExit("simulated crash before the ledger commit")
    ledger = {"format": 1, "batches": [*ledger["batches"], entry]}
    _atomic_write(
        store / LEDGER,
        lambda p: p.write_text(json.dumps(ledger, indent=1) + "\n", encoding="utf-8"),
    )
    return IngestResult(total_read, total_ok, len(quarantined), tuple(file_results), batch, store)


def _accepted_frame(rows: list[dict[str, Any]], batch: str) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows).assign(batch=batch)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    frame["line"] = frame["line"].astype("Int64")
    for column in ("id", "text", "label", "domain", "source", "batch", "file"):
        frame[column] = frame[column].astype("str")
    return frame[list(ACCEPTED_COLUMNS)]
