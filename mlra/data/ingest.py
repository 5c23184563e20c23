"""Field-feedback ingestion: every row of every file ends up accepted or quarantined, with a reason.

``ingest(paths, store_dir, params)`` reads JSONL, CSV and Parquet files and checks each row
(required fields, types, label in :data:`~mlra.data.source.LABELS`, text non-empty and within the
length bounds, valid UTF-8, parseable ``created_at`` that fits in UTC, ids unique within and across
files, texts unique once NFC-normalised and folded: :func:`text_key`). The store it writes::

    store_dir/
      ledger.json             the commit record: one entry per ingest batch, with its files' sha256
      accepted/BATCH.parquet  accepted rows: id, text, label, domain, source, created_at, ...
      quarantine/BATCH.jsonl  rejected rows: original content, reason, file, line

Invariants:

* accepted + quarantined = read, per file and in total. A file that cannot be parsed at all (empty,
  not Parquet, unknown type, UTF-16) or read at all (no permission, a FIFO, a folder, a broken
  link) counts as one row, quarantined whole. No content makes ingest raise (hostile input
  included: huge numbers, deep nesting, out-of-range dates): it is quarantined with its reason.
* A file whose sha256 is in the ledger is skipped: ingesting the same file twice adds nothing. An
  unreadable path is recorded under a hash of its path, reason and inode state instead (skipped
  while unchanged).
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
import stat
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from mlra.config import Params
from mlra.data.source import LABELS, domain_of, fold_text, row_id
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
    "pending",
    "text_key",
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
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit
        return f"<a {_type_name(value)} too large to show>"
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
    try:
        return stamp.astimezone(dt.UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is in year 10000 in UTC
        return Rejection(
            "bad_timestamp",
            f"created_at {_short(value)} is out of range once converted to UTC "
            f"(years {dt.MINYEAR}-{dt.MAXYEAR})",
        )


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


def _json_error(exc: ValueError | RecursionError) -> str:
    """Why a JSON line could not be read, in words (json's own limits included)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON: {exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "unreadable JSON: nested too deeply (over Python's recursion limit)"
    if "integer string conversion" in str(exc):
        return (
            "unreadable JSON: a number has more than "
            f"{sys.get_int_max_str_digits()} digits (Python's integer conversion limit)"
        )
    return f"unreadable JSON: {exc}"


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
        except (ValueError, RecursionError) as exc:
            yield number, Rejection("malformed_json", _json_error(exc)), original
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
    try:
        rows = table.to_pylist()
    except (ValueError, OverflowError):  # a value Python cannot hold: find the rows, one by one
        yield from _parquet_rows_one_by_one(table)
        return
    for number, row in enumerate(rows, start=1):
        yield number, row, row


def _parquet_rows_one_by_one(table: Any) -> Iterator[Parsed]:
    """The rows of a Arrow table; a row with a value Python cannot convert (invalid UTF-8 in a
    string column, a timestamp past year 9999) is rejected naming the column."""
    for index in range(table.num_rows):
        number = index + 1
        try:
            (row,) = table.slice(index, 1).to_pylist()
        except (ValueError, OverflowError):
            pass
        else:
            yield number, row, row
            continue
        readable: dict[str, object] = {}
        bad: list[str] = []
        for name in table.column_names:
            try:
                readable[name] = table.column(name)[index].as_py()
            except (ValueError, OverflowError) as exc:
                bad.append(f"{name} ({type(exc).__name__}: {exc})")
        kind = "invalid_utf8" if any("UnicodeDecodeError" in b for b in bad) else "bad_value"
        message = f"unreadable Parquet value in column {'; '.join(bad)}"
        yield number, Rejection(kind, message[:300]), readable | {"_unreadable": bad}


_WIDE_BOMS: Final = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _wide_encoding(data: bytes) -> str | None:
    """UTF-16 or UTF-32 when ``data`` starts with that byte-order mark, else None."""
    return next((name for bom, name in _WIDE_BOMS if data.startswith(bom)), None)


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
    elif kind != "parquet" and (encoding := _wide_encoding(data)):
        yield from _whole_file(
            data,
            Rejection(
                "wrong_encoding",
                f"the file is {encoding} (it starts with a {encoding} byte-order mark): "
                "feedback text files must be UTF-8; save it as UTF-8",
            ),
        )
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
    """Paths named, and the entries of folders named (sorted). In a folder, hidden entries and
    sub-folders are skipped (ingest does not descend), except a sub-folder named like a data file
    (``x.jsonl/``): that one, like a FIFO or a broken link, is kept, and ingest quarantines it
    with its reason. Raises :class:`~mlra.errors.DataError` for a path that does not exist."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir() and entry.suffix.lower() not in SUFFIXES:
                    continue
                files.append(entry)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return files


def pending(paths: Iterable[str | Path], store_dir: str | Path) -> list[Path]:
    """The files among ``paths`` (folders expanded, missing folders ignored) that an ingest into
    ``store_dir`` would read: those whose sha256 the ledger does not hold yet."""
    seen = {f["sha256"] for b in load_ledger(store_dir)["batches"] for f in b["files"]}
    present = [p for p in paths if Path(p).exists() or Path(p).is_symlink()]
    return [path for path in expand_paths(present) if _read_input(path)[1] not in seen]


_NOT_FILES: Final = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _read_input(path: Path) -> tuple[bytes | Rejection, str]:
    """The bytes of ``path`` and their sha256, or why it cannot be read and a hash that stays the
    same while the path does not change (so an unchanged unreadable path is reported once).

    Opened without blocking and checked with ``fstat`` before reading: a FIFO is never read from.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if path.is_symlink() and not path.exists():
            what = f"a broken symbolic link (to {os.readlink(path)})"
        else:
            what = f"cannot open it: {exc.strerror or exc}"
        return Rejection("unreadable_file", what), _unreadable_hash(path, what, _stat(path))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _NOT_FILES if test(info.st_mode)), "special")
            what = f"{kind}, not a regular file: nothing was read"
            return Rejection("not_a_file", what), _unreadable_hash(path, what, info)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except OSError as exc:
        what = f"cannot read it: {exc.strerror or exc}"
        return Rejection("unreadable_file", what), _unreadable_hash(path, what, _stat(path))
    finally:
        os.close(fd)
    return data, hashlib.sha256(data).hexdigest()


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _unreadable_hash(path: Path, why: str, info: os.stat_result | None) -> str:
    where = os.path.abspath(path)
    state = "" if info is None else f"{info.st_ino}:{info.st_ctime_ns}:{info.st_size}"
    return hashlib.sha256(f"unreadable\0{where}\0{why}\0{state}".encode()).hexdigest()


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


def text_key(text: str) -> str:
    """What two texts share when they are the same tweet: Unicode NFC, then case and whitespace
    folded (:func:`~mlra.data.source.fold_text`, as the validation gate compares texts)."""
    return fold_text(unicodedata.normalize("NFC", text))


@dataclasses.dataclass
class _Seen:
    """The ids and texts accepted so far (the store's and this batch's), with where each came
    from; rejects a row that repeats either."""

    ids: dict[str, str]  # id -> the file that brought it
    texts: dict[str, tuple[str, str]]  # text key -> (id, file)
    lines: dict[str, int | None] = dataclasses.field(default_factory=dict)  # id -> line, this file
    text_lines: dict[str, int | None] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, store: Path) -> _Seen:
        previous = load_accepted(store, columns=["id", "text", "file"])
        ids = [str(i) for i in previous["id"]]
        files = [str(f) for f in previous["file"]]
        texts = {
            text_key(str(t)): (i, f) for t, i, f in zip(previous["text"], ids, files, strict=True)
        }
        return cls(dict(zip(ids, files, strict=True)), texts)

    def check(self, row: dict[str, Any], file: str, line: int | None) -> dict[str, Any] | Rejection:
        rid, key = row["id"], text_key(row["text"])
        if rid in self.lines:
            return Rejection(
                "duplicate_id", f"duplicate id {rid!r}: also on line {self.lines[rid]} of this file"
            )
        if rid in self.ids:
            return Rejection(
                "duplicate_id", f"duplicate id {rid!r}: already accepted from {self.ids[rid]}"
            )
        if key in self.texts:
            other, where = self.texts[key]
            place = (
                f"line {self.text_lines[key]} of this file"
                if key in self.text_lines
                else f"accepted from {where}"
            )
            return Rejection(
                "duplicate_text",
                f"the text duplicates that of id {other!r} ({place}) once Unicode-normalised "
                "and case- and whitespace-folded: the same tweet under another id",
            )
        self.lines[rid] = line
        self.text_lines[key] = line
        self.texts[key] = (rid, file)
        return row

    def end_of_file(self, file: str) -> None:
        for rid in self.lines:
            self.ids[rid] = file
        self.lines.clear()
        self.text_lines.clear()


def _read_file_safely(path: Path, data: bytes, params: Params) -> Iterator[Parsed]:
    """:func:`_read_file`, but a reader that fails in a way no rule foresaw ends the file with one
    quarantined row naming the error, instead of aborting the ingest of every other file."""
    rows = _read_file(path, data, params)
    while True:
        try:
            item = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # any reader failure: bad content must not abort the ingest
            yield (
                None,
                Rejection(
                    "unreadable_file",
                    f"reading stopped after the rows above: {type(exc).__name__}: {exc}"[:500],
                ),
                _original(data),
            )
            return
        yield item


def _check_row_safely(row: Mapping[str, object], params: Params) -> dict[str, Any] | Rejection:
    try:
        return check_row(row, params)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        return Rejection("bad_value", f"the row could not be checked: {type(exc).__name__}: {exc}")


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
    # sha256 -> (batch, whether it was a path that could not be read)
    known_files = {
        f["sha256"]: (e["batch"], bool(f.get("unreadable")))
        for e in ledger["batches"]
        for f in e["files"]
    }
    seen = _Seen.of(store)
    now = dt.datetime.now(dt.UTC)
    file_results: list[FileResult] = []
    accepted: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    unreadable: set[str] = set()
    batch_hash = hashlib.sha256()
    for path in files:
        if progress is not None:
            progress(path)
        data, sha = _read_input(path)
        if sha in known_files:
            where, was_unreadable = known_files[sha]
            note = (
                f"already quarantined as unreadable ({where}), unchanged since"
                if was_unreadable
                else f"already ingested ({where})"
            )
            file_results.append(FileResult(str(path), sha, "skipped", 0, 0, 0, {}, note))
            continue
        known_files[sha] = ("this batch", isinstance(data, Rejection))
        batch_hash.update(sha.encode())
        if isinstance(data, Rejection):
            unreadable.add(sha)
            rows: Iterable[Parsed] = [(None, data, None)]
        else:
            rows = _read_file_safely(path, data, params)
        n_read = n_ok = 0
        reasons: dict[str, int] = {}
        note = ""
        for line, parsed, original in rows:
            n_read += 1
            result = parsed if isinstance(parsed, Rejection) else _check_row_safely(parsed, params)
            if not isinstance(result, Rejection):
                result = seen.check(result, path.name, line)
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
            n_ok += 1
            accepted.append(result | {"file": path.name, "line": line})
        seen.end_of_file(path.name)
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
            | ({"unreadable": True} if f.sha256 in unreadable else {})
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
