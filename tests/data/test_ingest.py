"""Ingest: each bad input, from a real file, gets a clear reason; nothing is lost or crashes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlra.config import Params
from mlra.data.ingest import (
    IngestResult,
    ingest,
    load_accepted,
    load_ledger,
    load_quarantine,
)
from mlra.data.source import row_id
from mlra.errors import DataError
from tests.data.synthetic import small_params

STAMP = "2026-01-05T10:00:00Z"


def good(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "text": f"claritin dose {i} works",
        "label": "positive",
        "source": "operator:test",
        "created_at": STAMP,
    } | extra


def jsonl(*rows: dict[str, Any] | str) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


@pytest.fixture
def params(tmp_path: Path) -> Params:
    return small_params(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def check_invariants(result: IngestResult, store: Path) -> None:
    """accepted + quarantined = read, per file and overall, and the store holds exactly that."""
    assert result.accepted + result.quarantined == result.read
    for f in result.files:
        assert f.accepted + f.quarantined == f.read, f
        assert sum(f.reasons.values()) == f.quarantined, f
    assert sum(f.read for f in result.files) == result.read
    ledger = load_ledger(store)
    assert sum(b["accepted"] for b in ledger["batches"]) == len(load_accepted(store))
    assert sum(b["quarantined"] for b in ledger["batches"]) == len(load_quarantine(store))


def one_file(tmp_path: Path, store: Path, params: Params, name: str, data: bytes) -> IngestResult:
    result = ingest([write(tmp_path, name, data)], store, params)
    check_invariants(result, store)
    return result


def reasons(store: Path) -> list[str]:
    return [q["reason"] for q in load_quarantine(store)]


# (file name, content, rows read, accepted, quarantined kind, a phrase of the reason)
BAD_ROWS: list[tuple[str, str, bytes, int, int, str, str]] = [
    (
        "missing fields",
        "missing.jsonl",
        jsonl(good(1), {"text": "claritin dose 2", "source": "x"}),
        2,
        1,
        "missing_fields",
        "missing required fields: label, created_at",
    ),
    (
        "unknown label",
        "label.jsonl",
        jsonl(good(1), good(2, label="furious")),
        2,
        1,
        "unknown_label",
        "label 'furious' is not one of negative, neutral, positive",
    ),
    ("empty text", "empty_text.jsonl", jsonl(good(1, text="")), 1, 0, "empty_text", "empty text"),
    (
        "whitespace-only text",
        "ws.jsonl",
        jsonl(good(1, text=" \t\n ")),
        1,
        0,
        "empty_text",
        "whitespace-only text",
    ),
    (
        "1 MB text",
        "huge.jsonl",
        jsonl(good(1), good(2, text="a" * (1 << 20))),
        2,
        1,
        "text_length",
        "text has 1,048,576 characters",
    ),
    (
        "invalid UTF-8 in a JSON line",
        "bytes.jsonl",
        jsonl(good(1))
        + b'{"text": "caf\xe9 \xff claritin", "label": "neutral"}\n'
        + jsonl(good(3)),
        3,
        2,
        "invalid_utf8",
        "invalid UTF-8 at byte",
    ),
    (
        "invalid UTF-8 in a CSV row",
        "bytes.csv",
        b"text,label,source,created_at\nclaritin \xff\xfe ok,neutral,op,2026-01-05\n"
        b"claritin fine,neutral,op,2026-01-05\n",
        2,
        1,
        "invalid_utf8",
        "text is not valid UTF-8",
    ),
    (
        "malformed JSON line in the middle",
        "malformed.jsonl",
        jsonl(good(1), '{"text": "claritin", "label": ', good(3)),
        3,
        2,
        "malformed_json",
        "malformed JSON",
    ),
    (
        "a JSON line that is not an object",
        "array.jsonl",
        jsonl(good(1), "[1, 2, 3]"),
        2,
        1,
        "malformed_json",
        "must be an object, got list",
    ),
    (
        "CSV with the wrong header",
        "header.csv",
        b"tweet,sentiment,when\nclaritin helps,positive,2026-01-05\n"
        b"claritin meh,neutral,2026-01-06\n",
        2,
        0,
        "wrong_header",
        "missing required fields: text, label, source, created_at (the CSV header is",
    ),
    (
        "CSV row with too many fields",
        "fields.csv",
        b"text,label,source,created_at\nclaritin ok,neutral,op,2026-01-05\na,b,c,d,e\n",
        2,
        1,
        "malformed_csv",
        "expected 4 fields (as in the header), got 5",
    ),
    (
        "unparseable timestamp",
        "time.jsonl",
        jsonl(good(1), good(2, created_at="last tuesday")),
        2,
        1,
        "bad_timestamp",
        "created_at 'last tuesday' is not an ISO 8601 timestamp",
    ),
    (
        "numeric timestamp",
        "epoch.jsonl",
        jsonl(good(1, created_at=1767607200)),
        1,
        0,
        "bad_type",
        "created_at must be an ISO 8601 string, got int",
    ),
    (
        "non-string text",
        "number.jsonl",
        jsonl(good(1, text=42), good(2, text=["claritin"]), good(3)),
        3,
        1,
        "bad_type",
        "text must be a string, got int 42",
    ),
    (
        "duplicate ids within a file",
        "dup.jsonl",
        jsonl(good(1, id="a1"), good(2, id="a1"), good(3), good(3, label="negative")),
        4,
        2,
        "duplicate_id",
        "duplicate id 'a1': also on line 1 of this file",
    ),
    (
        "id too long",
        "longid.jsonl",
        jsonl(good(1, id="x" * 65)),
        1,
        0,
        "bad_id",
        "id has 65 characters, more than ingest.max_id_chars=64",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "read", "accepted", "kind", "phrase"),
    [case[1:] for case in BAD_ROWS],
    ids=[case[0] for case in BAD_ROWS],
)
def test_bad_rows_are_quarantined_with_their_reason(
    tmp_path: Path,
    store: Path,
    params: Params,
    name: str,
    content: bytes,
    read: int,
    accepted: int,
    kind: str,
    phrase: str,
) -> None:
    result = one_file(tmp_path, store, params, name, content)
    assert (result.read, result.accepted) == (read, accepted)
    records = load_quarantine(store)
    assert len(records) == read - accepted
    assert kind in result.files[0].reasons
    assert any(phrase in r["reason"] for r in records), reasons(store)
    for record in records:  # the original content is kept beside the reason
        assert record["content"] not in (None, "", {}), record
        assert record["file"] == name and record["file_sha256"] == result.files[0].sha256


def test_one_megabyte_text_is_kept_whole_in_quarantine(
    tmp_path: Path, store: Path, params: Params
) -> None:
    one_file(tmp_path, store, params, "huge.jsonl", jsonl(good(1, text="b" * (1 << 20))))
    (record,) = load_quarantine(store)
    assert json.loads(record["content"])["text"] == "b" * (1 << 20)


def test_invalid_utf8_line_is_kept_as_its_bytes(
    tmp_path: Path, store: Path, params: Params
) -> None:
    import base64

    line = b'{"text": "\xff\xfe claritin", "label": "neutral"}'
    one_file(tmp_path, store, params, "b.jsonl", line + b"\n")
    (record,) = load_quarantine(store)
    assert base64.b64decode(record["content"]["base64"]) == line


WHOLE_FILES: list[tuple[str, str, bytes, str, str]] = [
    ("empty JSONL", "empty.jsonl", b"", "empty_file", "an empty file (0 bytes)"),
    ("empty CSV", "empty.csv", b"", "empty_file", "an empty file (0 bytes)"),
    ("empty Parquet", "empty.parquet", b"", "empty_file", "an empty file (0 bytes)"),
    ("whitespace file", "blank.jsonl", b"\n \n\t\n", "empty_file", "a file of only whitespace"),
    (
        "random bytes named .parquet",
        "random.parquet",
        bytes(range(256)) * 8,
        "unparseable_file",
        "not a readable Parquet file",
    ),
    (
        "unknown file type",
        "notes.txt",
        b"claritin is fine\n",
        "unsupported_file",
        "unsupported file type '.txt'",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "kind", "phrase"),
    [case[1:] for case in WHOLE_FILES],
    ids=[case[0] for case in WHOLE_FILES],
)
def test_unparseable_file_counts_as_one_quarantined_row(
    tmp_path: Path, store: Path, params: Params, name: str, content: bytes, kind: str, phrase: str
) -> None:
    result = one_file(tmp_path, store, params, name, content)
    assert (result.read, result.accepted, result.quarantined) == (1, 0, 1)
    assert result.files[0].reasons == {kind: 1}
    assert phrase in result.files[0].note
    (record,) = load_quarantine(store)
    assert record["line"] is None and phrase in record["reason"]


def test_random_parquet_bytes_are_kept(tmp_path: Path, store: Path, params: Params) -> None:
    import base64

    data = os.urandom(4096)
    one_file(tmp_path, store, params, "x.parquet", data)
    (record,) = load_quarantine(store)
    assert base64.b64decode(record["content"]["base64"]) == data


def test_parquet_with_wrong_column_types(tmp_path: Path, store: Path, params: Params) -> None:
    frame = pd.DataFrame(
        {
            "text": [101, 102, 103],  # int64, not string
            "label": ["neutral", "neutral", "neutral"],
            "source": ["op"] * 3,
            "created_at": [1, 2, 3],  # int64, not a timestamp
        }
    )
    path = tmp_path / "in" / "types.parquet"
    path.parent.mkdir()
    frame.to_parquet(path)
    result = ingest([path], store, params)
    check_invariants(result, store)
    assert (result.read, result.accepted, result.quarantined) == (3, 0, 3)
    assert all("text must be a string, got int" in r for r in reasons(store))


def test_good_parquet_with_timestamps_is_accepted(
    tmp_path: Path, store: Path, params: Params
) -> None:
    frame = pd.DataFrame(
        {
            "text": ["claritin a", "claritin b"],
            "label": ["Positive", " negative "],  # case and spaces are normalised
            "source": ["op", "op"],
            "created_at": pd.to_datetime(["2026-01-05 10:00", "2026-01-06 11:00"], utc=True),
        }
    )
    path = tmp_path / "good.parquet"
    frame.to_parquet(path)
    result = ingest([path], store, params)
    check_invariants(result, store)
    assert result.accepted == 2
    accepted = load_accepted(store)
    assert list(accepted["label"]) == ["positive", "negative"]
    assert list(accepted["id"]) == [row_id("claritin a"), row_id("claritin b")]
    assert list(accepted["domain"]) == ["claritin", "claritin"]
    assert str(accepted["created_at"].dtype) == "datetime64[us, UTC]"


def test_duplicate_ids_across_files_and_ingests(
    tmp_path: Path, store: Path, params: Params
) -> None:
    first = write(tmp_path, "a.jsonl", jsonl(good(1, id="x1"), good(2)))
    second = write(
        tmp_path,
        "b.csv",
        b"id,text,label,source,created_at\n"
        b"x1,claritin other,neutral,op,2026-01-05\n"  # same id as a.jsonl
        b",claritin dose 2 works,neutral,op,2026-01-05\n"  # same text -> same derived id
        b"x3,claritin new,neutral,op,2026-01-05\n",
    )
    result = ingest([first, second], store, params)
    check_invariants(result, store)
    assert [(f.read, f.accepted) for f in result.files] == [(2, 2), (3, 1)]
    assert sum("already accepted from a.jsonl" in r for r in reasons(store)) == 2
    # a later ingest sees the ids already in the store
    third = write(tmp_path, "c.jsonl", jsonl(good(9, id="x3")))
    result = ingest([third], store, params)
    check_invariants(result, store)
    assert result.quarantined == 1 and "already accepted from b.csv" in reasons(store)[-1]


def test_same_file_twice_adds_nothing(tmp_path: Path, store: Path, params: Params) -> None:
    path = write(tmp_path, "a.jsonl", jsonl(good(1), good(2), "not json"))
    first = ingest([path], store, params)
    assert (first.read, first.accepted, first.quarantined) == (3, 2, 1)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    again = ingest([path], store, params)
    assert (again.read, again.accepted, again.quarantined, again.batch) == (0, 0, 0, None)
    assert again.files[0].status == "skipped" and "already ingested" in again.files[0].note
    # the same bytes under another name are the same file
    copy = write(tmp_path, "copy.jsonl", path.read_bytes())
    assert ingest([copy, path], store, params).read == 0
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert len(load_accepted(store)) == 2 and len(load_quarantine(store)) == 1


def test_crash_before_commit_leaves_no_half_written_state(
    tmp_path: Path, store: Path, params: Params
) -> None:
    ingest([write(tmp_path, "a.jsonl", jsonl(good(1)))], store, params)
    ledger = load_ledger(store)
    crashing = write(tmp_path, "b.jsonl", jsonl(good(2), good(3), "broken"))
    with pytest.raises(SystemExit):
        ingest([crashing], store, params, _crash_before_commit=True)
    # the batch files are on disk, but nothing reads them: the ledger did not change
    assert len(list((store / "accepted").iterdir())) == 2
    assert load_ledger(store) == ledger
    assert len(load_accepted(store)) == 1 and load_quarantine(store) == []
    # the next ingest removes the leftovers and ingests the file for real
    result = ingest([crashing], store, params)
    check_invariants(result, store)
    assert (result.accepted, result.quarantined) == (2, 1)
    assert len(list((store / "accepted").iterdir())) == 2
    assert len(load_accepted(store)) == 3
    assert not list(store.rglob("*.tmp"))


def test_folders_are_expanded_and_missing_paths_raise(
    tmp_path: Path, store: Path, params: Params
) -> None:
    write(tmp_path, "a.jsonl", jsonl(good(1)))
    write(tmp_path, "b.jsonl", jsonl(good(2)))
    write(tmp_path, ".gitkeep", b"")
    result = ingest([tmp_path / "in"], store, params)
    assert [Path(f.path).name for f in result.files] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(DataError, match="no such file or folder"):
        ingest([tmp_path / "nope.jsonl"], store, params)


def test_many_bad_files_in_one_batch_lose_nothing(
    tmp_path: Path, store: Path, params: Params
) -> None:
    paths = [write(tmp_path, name, content) for _, name, content, *_ in BAD_ROWS]
    paths += [write(tmp_path, name, content) for _, name, content, *_ in WHOLE_FILES]
    result = ingest(paths, store, params)
    check_invariants(result, store)
    # the three empty files have the same content: the ledger takes the first, skips the others
    distinct = len({content for _, _, content, *_ in WHOLE_FILES})
    assert result.read == sum(case[3] for case in BAD_ROWS) + distinct
    assert [f.status for f in result.files].count("skipped") == len(WHOLE_FILES) - distinct
    assert result.batch is not None and len(load_ledger(store)["batches"]) == 1


def test_cli_ingest_json_summary(tmp_path: Path, store: Path, capsys: Any) -> None:
    from mlra.cli import main
    from tests.data.synthetic import REPO

    a = write(tmp_path, "a.jsonl", jsonl(good(1), good(2, label="??")))
    b = write(tmp_path, "b.parquet", b"not parquet")
    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    code = main(
        ["ingest", str(a), str(b), "--store", str(store), "--params", str(params_file), "--json"]
    )
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (3, 1, 2)
    assert [Path(f["path"]).name for f in summary["files"]] == ["a.jsonl", "b.parquet"]
    with pytest.raises(SystemExit) as exit_:  # a path that does not exist: a usage error
        main(["ingest", str(tmp_path / "missing.csv"), "--store", str(store)])
    assert exit_.value.code == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_csv_reasons_name_the_physical_line(tmp_path: Path, store: Path, params: Params) -> None:
    content = (
        b"text,label,source,created_at\n"
        b'"claritin, a\nquoted line break",neutral,op,2026-01-05\n'  # one row over lines 2-3
        b"\n"
        b"claritin bad,furious,op,2026-01-05\n"  # line 5
    )
    result = one_file(tmp_path, store, params, "lines.csv", content)
    assert (result.accepted, result.quarantined) == (1, 1)
    (record,) = load_quarantine(store)
    assert record["line"] == 5 and record["content"]["label"] == "furious"
    assert load_accepted(store)["text"].iloc[0] == "claritin, a\nquoted line break"


# ------------------------------------------------------------- hostile input (issue 12, point 9)

HOSTILE_ROWS: list[tuple[str, bytes, str, str]] = [
    (
        "created_at that overflows once in UTC",
        jsonl(good(2, created_at="9999-12-31T23:00:00-05:00")),
        "bad_timestamp",
        "created_at '9999-12-31T23:00:00-05:00' is out of range once converted to UTC",
    ),
    (
        "created_at that underflows once in UTC",
        jsonl(good(2, created_at="0001-01-01T00:30:00+01:00")),
        "bad_timestamp",
        "is out of range once converted to UTC",
    ),
    (
        "a 5000-digit number",
        b'{"text": "claritin x", "label": "neutral", "n": ' + b"7" * 5000 + b"}\n",
        "malformed_json",
        "a number has more than 4300 digits",
    ),
    (
        "JSON nested 100,000 deep",
        b'{"text": "claritin y", "label": "neutral", "n": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}\n",
        "malformed_json",
        "nested too deeply",
    ),
]


@pytest.mark.parametrize(
    ("content", "kind", "phrase"),
    [case[1:] for case in HOSTILE_ROWS],
    ids=[case[0] for case in HOSTILE_ROWS],
)
def test_hostile_row_is_quarantined_and_the_rest_ingested(
    tmp_path: Path, store: Path, params: Params, content: bytes, kind: str, phrase: str
) -> None:
    data = jsonl(good(1)) + content + jsonl(good(3))
    result = one_file(tmp_path, store, params, "hostile.jsonl", data)
    assert (result.read, result.accepted, result.quarantined) == (3, 2, 1)
    assert result.files[0].reasons == {kind: 1}
    (record,) = load_quarantine(store)
    assert phrase in record["reason"] and record["line"] == 2
    assert sorted(load_accepted(store)["text"]) == [
        "claritin dose 1 works",
        "claritin dose 3 works",
    ]


def test_hostile_parquet_values_are_quarantined_per_row(
    tmp_path: Path, store: Path, params: Params
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 4
    text = pa.array(
        [b"claritin a", b"claritin \xff bad", b"claritin c", b"claritin d"], type=pa.binary()
    ).view(pa.string())  # invalid UTF-8 inside a string column
    stamps = pa.array([0, 0, 0, 10**14], type=pa.timestamp("s"))  # row 4: year ~3 million
    table = pa.table(
        {
            "text": text,
            "label": ["neutral"] * n,
            "source": ["op"] * n,
            "created_at": stamps,
        }
    )
    path = tmp_path / "hostile.parquet"
    pq.write_table(table, path)
    result = ingest([path], store, params)
    check_invariants(result, store)
    assert (result.read, result.accepted, result.quarantined) == (4, 2, 2)
    assert result.files[0].reasons == {"invalid_utf8": 1, "bad_value": 1}
    by_line = {r["line"]: r["reason"] for r in load_quarantine(store)}
    assert "column text" in by_line[2] and "column created_at" in by_line[4]


def test_unreadable_paths_are_quarantined_and_other_files_ingested(
    tmp_path: Path, store: Path, params: Params
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_bytes(jsonl(good(1)))
    os.mkfifo(inbox / "b.jsonl")  # reading it would block forever
    (inbox / "c.jsonl").mkdir()  # a folder named like a data file
    (inbox / "archive").mkdir()  # a plain sub-folder: not descended into, not reported
    (inbox / "d.jsonl").symlink_to(tmp_path / "gone.jsonl")  # a broken link
    (inbox / "e.csv").write_bytes("text,label\nclaritin ok,neutral\n".encode("utf-16"))
    (inbox / "z.jsonl").write_bytes(jsonl(good(2)))
    result = ingest([inbox], store, params)
    check_invariants(result, store)
    names = [Path(f.path).name for f in result.files]
    assert names == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.csv", "z.jsonl"]
    assert (result.read, result.accepted, result.quarantined) == (6, 2, 4)
    notes = {Path(f.path).name: (f.reasons, f.note) for f in result.files}
    assert notes["b.jsonl"] == ({"not_a_file": 1}, "a FIFO (named pipe), not a regular file: "
                                "nothing was read")  # fmt: skip
    assert notes["c.jsonl"][0] == {"not_a_file": 1} and "a folder" in notes["c.jsonl"][1]
    assert notes["d.jsonl"][0] == {"unreadable_file": 1}
    assert "a broken symbolic link" in notes["d.jsonl"][1]
    assert notes["e.csv"][0] == {"wrong_encoding": 1} and "UTF-16" in notes["e.csv"][1]
    # the FIFO given by name, beside a good file, is no error either
    result = ingest([inbox / "b.jsonl", write(tmp_path, "f.jsonl", jsonl(good(3)))], store, params)
    check_invariants(result, store)
    # unchanged, it was reported once: now skipped, saying why
    assert [f.status for f in result.files] == ["skipped", "ingested"]
    assert "already quarantined as unreadable" in result.files[0].note
    assert result.accepted == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_file_without_read_permission_is_quarantined(
    tmp_path: Path, store: Path, params: Params
) -> None:
    locked = write(tmp_path, "locked.jsonl", jsonl(good(1)))
    locked.chmod(0)
    result = ingest([locked, write(tmp_path, "ok.jsonl", jsonl(good(2)))], store, params)
    check_invariants(result, store)
    assert (result.read, result.accepted) == (2, 1)
    assert "Permission denied" in result.files[0].note
    locked.chmod(0o644)  # once readable, it is ingested for real
    assert ingest([locked], store, params).accepted == 1


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_file_that_fails_to_read_is_quarantined(
    tmp_path: Path, store: Path, params: Params
) -> None:
    bad = tmp_path / "in" / "io-error.jsonl"
    bad.parent.mkdir()
    bad.symlink_to("/proc/self/mem")  # a regular file whose read fails (EIO), even for root
    result = ingest([bad, write(tmp_path, "ok.jsonl", jsonl(good(2)))], store, params)
    check_invariants(result, store)
    assert (result.read, result.accepted) == (2, 1)
    assert result.files[0].reasons == {"unreadable_file": 1}
    assert "cannot read it: Input/output error" in result.files[0].note


def test_same_text_under_another_id_is_quarantined(
    tmp_path: Path, store: Path, params: Params
) -> None:
    one_file(tmp_path, store, params, "a.jsonl", jsonl(good(1, id="first", text="Café  Claritin")))
    # NFD "e + combining acute", other case and spacing: the same tweet, another id
    again = "  cafe\u0301 CLARITIN "
    result = one_file(
        tmp_path,
        store,
        params,
        "b.jsonl",
        jsonl(
            good(2, id="second", text=again),
            good(3, id="third"),
            good(4, id="fourth", text="claritin DOSE 3 works"),
        ),
    )
    assert (result.read, result.accepted) == (3, 1)
    assert result.files[0].reasons == {"duplicate_text": 2}
    first, second = reasons(store)
    assert "duplicates that of id 'first' (accepted from a.jsonl)" in first
    assert "duplicates that of id 'third' (line 2 of this file)" in second
    assert list(load_accepted(store)["id"]) == ["first", "third"]


def test_cli_ingest_survives_a_fifo(tmp_path: Path, store: Path, capsys: Any) -> None:
    from mlra.cli import main
    from tests.data.synthetic import REPO

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_bytes(jsonl(good(1)))
    os.mkfifo(inbox / "pipe.jsonl")
    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    code = main(
        ["ingest", str(inbox), "--store", str(store), "--params", str(params_file), "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (2, 1, 1)
