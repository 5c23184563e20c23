"""The step commands end to end on the real base model, as a user types them: `mlra prepare`,
`validate`, `train`, `evaluate`, `register --gate`, `promote`, `predict` and `status` on one
project folder (a few training steps), through the command's entry point, ``mlra.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flow_helpers import small_params

pytestmark = pytest.mark.integration


def _ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``mlra ARGS`` through the command's entry point (in this process: the imports are paid
    once); its exit status must be 0. Returns what it printed on stdout."""
    from mlra.cli import main

    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    assert status == 0, f"mlra {' '.join(args)} exited {status}:\n{out}\n{err}"
    return out


def test_train_evaluate_register_promote_predict_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLRA_HOME", str(tmp_path / ".mlra"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLRA_AUDIT", raising=False)
    small_params(tmp_path)
    _ok(capsys, "prepare")
    _ok(capsys, "validate", "--no-docs")

    trained = json.loads(_ok(capsys, "train", "--no-progress", "--no-mlflow", "--json")
                         .splitlines()[-1])  # fmt: skip
    assert trained["metadata"]["steps"] == 2
    assert (tmp_path / "artifacts/candidate/adapter/manifest.json").is_file()

    metrics = json.loads(_ok(capsys, "evaluate", "--json"))
    assert metrics["overall"]["champion"] is None
    assert {"base", "candidate"} <= set(metrics["overall"])
    assert (tmp_path / "metrics/eval.md").is_file() and list((tmp_path / "plots").glob("*.png"))

    out = _ok(capsys, "register", "artifacts/candidate/adapter", "--metrics", "metrics/eval.json",
              "--validation", "reports/validation/report.json", "--gate", "--by", "ci",
              "--json")  # fmt: skip
    registered = json.loads(out.splitlines()[-1])
    assert registered["version"] == "1" and registered["gate"] == "passed"

    # the repository's policy, first-automatic: the first champion needs no person
    assert "approved by 'policy:automatic'" in _ok(capsys, "promote", "1", "--by", "ci")

    predicted = json.loads(
        _ok(capsys, "predict", "--alias", "champion", "--json",
            "I love this new phone", "the flight was late again").splitlines()[-1]
    )  # fmt: skip
    assert predicted["version"] == "1"
    assert [p["label"] for p in predicted["predictions"]] != []
    assert all(p["label"] in ("negative", "neutral", "positive") for p in predicted["predictions"])

    status = json.loads(_ok(capsys, "status", "--json").splitlines()[-1])
    assert status["champion"] == "1" and status["audit"]["intact"]  # verified with its anchors
    from mlra.audit import open_trail

    actions = [r.action for r in open_trail(tmp_path / ".mlra" / "audit.jsonl").records()]
    for action in ("validation", "training", "evaluation", "registration", "gate", "promotion"):
        assert action in actions, action
