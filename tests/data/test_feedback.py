"""Simulated feedback: dated JSONL/CSV files from the held-out pool, deterministic, ingestible."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from mlra.data.feedback import simulate, simulate_next
from mlra.data.ingest import ingest, load_accepted
from mlra.data.splits import SPLITS, feedback_pool, load_split, prepare
from tests.data.synthetic import replace, small_params, synthetic_corpus


def test_simulate_writes_dated_alternating_files(tmp_path: Path) -> None:
    params = small_params(tmp_path)
    corpus = synthetic_corpus(200)
    paths = simulate(params, corpus=corpus)
    assert [p.name for p in paths] == [
        "feedback-2026-01-05.jsonl",
        "feedback-2026-01-12.csv",
        "feedback-2026-01-19.jsonl",
    ]
    rows = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert len(rows) == params.feedback.rows_per_batch
    assert set(rows[0]) == {"id", "text", "label", "domain", "source", "created_at"}
    assert all(r["created_at"].startswith("2026-01-05T") for r in rows)
    with paths[1].open(newline="") as f:
        header = next(csv.reader(f))
    assert header == ["text", "label", "domain", "source", "created_at"]  # no id: derived

    pool = set(feedback_pool(params, corpus)["id"])
    assert {r["id"] for r in rows} <= pool
    # deterministic: a second run writes the same bytes
    before = [p.read_bytes() for p in paths]
    assert [p.read_bytes() for p in simulate(params, corpus=corpus)] == before


def test_simulated_feedback_is_new_to_the_model_and_ingests_cleanly(tmp_path: Path) -> None:
    params = small_params(tmp_path)
    corpus = synthetic_corpus(200)
    prepare(params, corpus=corpus)
    prepared = {i for n in SPLITS for i in load_split(params.data.prepared_dir, n)["id"]}
    paths = simulate(params, corpus=corpus)
    result = ingest(paths, params.data.feedback_dir, params)
    assert result.read == result.accepted == 3 * params.feedback.rows_per_batch
    accepted = load_accepted(params.data.feedback_dir)
    assert prepared.isdisjoint(accepted["id"])  # held out of every split until it comes back
    assert set(accepted["domain"]) <= set(params.data.target_domains)
    again = ingest(simulate(params, corpus=corpus), params.data.feedback_dir, params)
    assert again.read == 0


def test_relabel_share_flips_labels(tmp_path: Path) -> None:
    params = replace(small_params(tmp_path), "feedback", relabel_share=1.0)
    corpus = synthetic_corpus(200)
    truth = dict(zip(corpus["id"], corpus["label"], strict=True))
    (path, *_) = simulate(params, corpus=corpus, batches=1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(r["label"] != truth[r["id"]] for r in rows)


def test_cli_simulate_then_ingest(tmp_path: Path, capsys: Any) -> None:
    """`mlra feedback simulate` on the real corpus, then `mlra ingest` of its files (in-process;
    `mlra prepare` runs under `dvc repro` in tests/test_dvc.py)."""
    import yaml

    from mlra.cli import main

    params = small_params(tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.to_dict()))
    assert main(["feedback", "simulate", "--params", str(params_file), "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "feedback-2026-01-05.jsonl (40 rows)" in out and "feedback-2026-01-12.csv" in out
    args = ["ingest", str(tmp_path / "inbox"), "--params", str(params_file), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (80, 80, 0)
    with pytest.raises(SystemExit) as exit_:  # a usage error, before anything runs
        main(["feedback", "simulate", "--params", str(params_file), "--batches", "0"])
    assert exit_.value.code == 2


def test_simulate_next_writes_the_week_after_what_was_ingested(tmp_path: Path) -> None:
    params = small_params(tmp_path)
    corpus = synthetic_corpus(200)
    inbox = Path(params.data.inbox_dir)
    first = simulate_next(params, corpus=corpus)
    assert first is not None and first.name == "feedback-2026-01-05.jsonl"
    assert simulate_next(params, corpus=corpus).name == "feedback-2026-01-12.csv"  # type: ignore[union-attr]
    ingest([inbox], params.data.feedback_dir, params)
    for path in inbox.iterdir():  # ingested files leave the inbox; the ledger remembers them
        path.unlink()
    third = simulate_next(params, corpus=corpus)
    assert third is not None and third.name == "feedback-2026-01-19.jsonl"
    assert third.read_bytes() == simulate(params, tmp_path / "all", corpus)[2].read_bytes()
