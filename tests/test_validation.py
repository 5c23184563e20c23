"""The validation gate: real Great Expectations on real Parquet files; failures name themselves."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlra.config import Params
from mlra.data.feedback import simulate
from mlra.data.ingest import ingest
from mlra.data.splits import prepare
from mlra.errors import ValidationFailed
from mlra.validation import ValidationReport, label_kl, validate
from tests.data.synthetic import replace, small_params, synthetic_corpus


def test_label_kl() -> None:
    same = {"negative": 10.0, "neutral": 20.0, "positive": 30.0}
    assert label_kl(same, {k: v * 100 for k, v in same.items()}) == pytest.approx(0, abs=0.01)
    skewed = label_kl({"negative": 100.0}, same)
    assert skewed > 0.5 and math.isfinite(skewed)  # smoothing keeps absent labels finite


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """Prepared synthetic splits plus one simulated feedback batch, shared by the module."""
    tmp = tmp_path_factory.mktemp("gate")
    params = small_params(tmp)
    corpus = synthetic_corpus(200)
    prepare(params, corpus=corpus)
    ingest(simulate(params, corpus=corpus), params.data.feedback_dir, params)
    return params


def copy_of(params: Params, tmp_path: Path) -> Params:
    """The module's prepared data, copied so a test may damage it."""
    prepared = tmp_path / "prepared"
    feedback = tmp_path / "feedback"
    shutil.copytree(params.data.prepared_dir, prepared)
    shutil.copytree(params.data.feedback_dir, feedback)
    return replace(params, "data", prepared_dir=str(prepared), feedback_dir=str(feedback))


def by_name(report: ValidationReport) -> dict[str, Any]:
    return {f"{o.check}: {o.name}": o for o in report.expectations}


def test_gate_passes_and_writes_report_and_data_docs(prepared: Params, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = validate(prepared, out_dir=out)
    assert report.passed and not report.failed
    assert report.drift_status == "checked" and report.drift is not None
    assert report.drift.rows == prepared.feedback.rows_per_batch * 3
    checks = {o.check for o in report.expectations}
    assert checks == {"training_data", "split_overlap", "label_balance", "drift"}
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["passed"] is True and on_disk["failed"] == []
    assert len(on_disk["expectations"]) == len(report.expectations)
    for item in on_disk["expectations"]:
        assert {"check", "name", "expectation", "success", "observed"} <= set(item)
        assert item["expectation"].startswith("expect_")
    index = out / "data_docs" / "index.html"
    assert index.is_file() and "expect" in index.read_text().lower()
    assert report.metrics()["passed"] == 1
    assert_readable_offline(out)
    page = (out / "report.html").read_text()
    assert report.html == str(out / "report.html") and on_disk["html"] == report.html
    assert "Validation gate" in page and "passed" in page
    for outcome in report.expectations:  # every statement, in words, with its observed value
        assert html.escape(outcome.name, quote=True) in page


def assert_readable_offline(out: Path) -> None:
    """Nothing in the HTML reports loads from the network; the Data Docs index links each page
    (GX's own index lists them by script, from a CDN)."""
    pages = [out / "report.html", *(out / "data_docs").rglob("*.html")]
    for page in pages:
        text = page.read_text()
        remote = re.findall(r"<(?:link|script|img)\b[^>]*(?:href|src)=[\"']https?://", text, re.I)
        assert not remote, (page, remote[:3])
        assert "<style>" in text  # styled inline
    index = (out / "data_docs" / "index.html").read_text()
    linked = set(re.findall(r"href='(validations/[^']+\.html)'", index))
    on_disk = {p.relative_to(out / "data_docs").as_posix()
               for p in (out / "data_docs" / "validations").rglob("*.html")}  # fmt: skip
    assert linked == on_disk and len(on_disk) == 5
    assert "href='../report.html'" in index


def test_broken_training_data_fails_the_gate_naming_each_expectation(
    prepared: Params, tmp_path: Path
) -> None:
    params = copy_of(prepared, tmp_path)
    prepared_dir = Path(params.data.prepared_dir)
    train = pd.read_parquet(prepared_dir / "train.parquet")
    golden = pd.read_parquet(prepared_dir / "golden.parquet")
    bad = pd.DataFrame(
        {
            "id": [golden["id"].iloc[0], "dup", "dup"],  # leaks a golden id; a duplicate id
            "text": ["leaked", "x" * 5000, "same text"],  # one text too long
            "label": ["negative", "angry", "neutral"],  # a label outside the set
            "domain": ["apple", "apple", "apple"],
            "origin": ["corpus", "corpus", "corpus"],
        }
    )
    pd.concat([train, bad], ignore_index=True).to_parquet(prepared_dir / "train.parquet")
    out = tmp_path / "report"
    with pytest.raises(ValidationFailed) as info:
        validate(params, out_dir=out, data_docs=False)
    message = str(info.value)
    for expected in (
        "training_data: label is one of negative, neutral, positive",
        "training_data: text length within [1, 1000]",
        "training_data: ids are unique",
        "split_overlap: no id is in two splits",
    ):
        assert expected in message
    report = json.loads((out / "report.json").read_text())  # written before raising
    page = (out / "report.html").read_text()
    assert "FAILED" in page and page.count("<td class='bad'>FAILED</td>") == 4
    assert report["passed"] is False and len(report["failed"]) == 4
    failed = {e["name"]: e for e in report["expectations"] if not e["success"]}
    assert failed["label is one of negative, neutral, positive"]["observed"][
        "partial_unexpected_list"
    ] == ["angry"]


def test_class_balance_and_drift_thresholds(prepared: Params) -> None:
    strict = replace(
        replace(prepared, "validation", min_label_share=0.34, max_label_share=0.9),
        "drift",
        max_label_kl=1e-9,
    )
    report = validate(strict, raise_on_failure=False, data_docs=False)
    failed = {f"{o.check}: {o.name}" for o in report.failed}
    assert failed == {
        "label_balance: each label's share within [0.34, 0.9]",
        "drift: label KL divergence <= drift.max_label_kl=1e-09",
    }
    with pytest.raises(ValidationFailed, match="failed 2 of"):
        report.raise_if_failed()


def test_drift_flags_unseen_domains_and_short_texts(prepared: Params, tmp_path: Path) -> None:
    params = copy_of(prepared, tmp_path)
    rows = [
        {
            "text": f"stock tip {i}",  # short, and in a domain training never saw
            "label": "negative",
            "domain": "finance",
            "source": "op",
            "created_at": "2026-02-01T00:00:00Z",
        }
        for i in range(30)
    ]
    path = tmp_path / "finance.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest([path], params.data.feedback_dir, params)
    report = validate(params, raise_on_failure=False, data_docs=False)
    assert report.drift is not None and report.drift.unseen_domains == ["finance"]
    assert report.drift.unseen_domain_share == 1.0
    failed = {o.name for o in report.failed}
    assert any(name.startswith("share of rows in domains unseen") for name in failed)


def test_small_batch_skips_drift(prepared: Params, tmp_path: Path) -> None:
    params = copy_of(prepared, tmp_path)
    path = tmp_path / "tiny.jsonl"
    row = {"text": "claritin tiny", "label": "neutral", "source": "op", "created_at": "2026-02-01"}
    path.write_text(json.dumps(row) + "\n")
    ingest([path], params.data.feedback_dir, params)
    report = validate(params, data_docs=False)
    assert report.drift is None and report.drift_status.startswith("skipped: newest batch")
    assert "fewer than drift.min_rows=20" in report.drift_status


def test_cli_validate_exits_1_on_failure(prepared: Params, tmp_path: Path, capsys: Any) -> None:
    import yaml

    from mlra.cli import main

    raw = prepared.to_dict()
    raw["validation"]["max_label_share"] = 0.3
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    metrics = tmp_path / "metrics.json"
    args = ["validate", "--params", str(params_file), "--out", str(tmp_path / "r"), "--no-docs"]
    assert main([*args, "--metrics", str(metrics)]) == 1
    err = capsys.readouterr().err
    assert "mlra validate: error: the validation gate failed" in err
    assert "label_balance: each label's share within [0.05, 0.3]" in err
    assert json.loads(metrics.read_text())["passed"] == 0
