"""Splits: a row's split depends on its id alone; feedback moves nothing; golden never trains."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from mlra.config import SplitShares
from mlra.data.ingest import ingest
from mlra.data.source import row_id
from mlra.data.splits import (
    SPLITS,
    corpus_rows,
    feedback_pool,
    in_feedback_pool,
    load_split,
    prepare,
    split_of,
)
from mlra.errors import DataError
from tests.data.synthetic import small_params, synthetic_corpus

SHARES = SplitShares(train=0.7, val=0.1, test=0.1, golden=0.1)


def test_split_of_is_a_function_of_the_id() -> None:
    ids = [row_id(f"tweet {i}") for i in range(20_000)]
    first = [split_of(i, SHARES) for i in ids]
    assert first == [split_of(i, SHARES) for i in reversed(ids)][::-1]
    counts = Counter(first)
    for name in SPLITS:
        assert abs(counts[name] / len(ids) - getattr(SHARES, name)) < 0.015, counts
    assert [split_of(i, SHARES, seed=1) for i in ids] != first  # the seed reshuffles


def test_golden_is_unmoved_when_train_and_val_shares_change() -> None:
    ids = [row_id(f"tweet {i}") for i in range(5_000)]
    other = SplitShares(train=0.5, val=0.3, test=0.1, golden=0.1)
    golden = {i for i in ids if split_of(i, SHARES) == "golden"}
    assert golden == {i for i in ids if split_of(i, other) == "golden"}


def test_pool_takes_only_target_domains(tmp_path: Path) -> None:
    params = small_params(tmp_path)
    corpus = synthetic_corpus(200)
    pool = feedback_pool(params, corpus)
    kept = corpus_rows(params, corpus)
    assert len(pool) + len(kept) == len(corpus)
    assert set(pool["id"]).isdisjoint(kept["id"])
    assert "airline" not in set(pool["domain"])
    assert set(pool["domain"]) == set(params.data.target_domains)
    share = len(pool) / (corpus["domain"] != "airline").sum()
    assert abs(share - params.data.feedback_pool) < 0.05
    assert all(in_feedback_pool(i, params.data.feedback_pool) for i in pool["id"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prepare_writes_splits_and_manifest(tmp_path: Path) -> None:
    params = small_params(tmp_path)
    corpus = synthetic_corpus(200)
    result = prepare(params, corpus=corpus)
    out = Path(params.data.prepared_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    frames = {name: load_split(out, name) for name in SPLITS}
    ids = [i for f in frames.values() for i in f["id"]]
    assert len(ids) == len(set(ids)) == manifest["rows"] == len(corpus_rows(params, corpus))
    for name, frame in frames.items():
        assert list(frame.columns) == ["id", "text", "label", "domain", "origin"]
        assert manifest["splits"][name]["sha256"] == sha256(out / f"{name}.parquet")
        assert manifest["splits"][name]["rows"] == len(frame) == result.counts[name]
        assert {split_of(i, params.data.splits) for i in frame["id"]} == {name}
        assert frame["domain"].nunique() == 6  # every domain in every split, golden included
    assert not list(out.glob("*.tmp"))


def test_feedback_moves_no_row_and_lands_by_its_id(tmp_path: Path) -> None:
    params = small_params(tmp_path)
    corpus = synthetic_corpus(200)
    out = Path(params.data.prepared_dir)
    prepare(params, corpus=corpus)
    before = {n: set(load_split(out, n)["id"]) for n in SPLITS}

    pool = feedback_pool(params, corpus).head(30)
    corrected = corpus_rows(params, corpus).iloc[0]  # an operator corrects a corpus row's label
    new_label = "positive" if corrected["label"] != "positive" else "negative"
    rows = [
        {"text": t, "label": lab, "source": "op", "created_at": "2026-01-05"}
        for t, lab in zip(pool["text"], pool["label"], strict=True)
    ] + [
        {"text": corrected["text"], "label": new_label, "source": "op", "created_at": "2026-01-05"}
    ]
    inbox = tmp_path / "fb.jsonl"
    inbox.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ingest([inbox], params.data.feedback_dir, params).accepted == 31

    result = prepare(params, corpus=corpus)
    after = {n: load_split(out, n) for n in SPLITS}
    for name in SPLITS:
        assert before[name] <= set(after[name]["id"])  # nothing moved
    assert result.manifest["feedback_rows"] == 31
    for name, frame in after.items():
        fb = frame[frame["origin"] == "feedback"]
        assert {split_of(i, params.data.splits) for i in fb["id"]} <= {name}
    everything = pd.concat(after.values())
    row = everything[everything["id"] == corrected["id"]]
    assert list(row["label"]) == [new_label] and list(row["origin"]) == ["feedback"]


def test_load_split_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_split(tmp_path, "dev")
    with pytest.raises(DataError, match="run `mlra prepare`"):
        load_split(tmp_path, "train")
