"""The step commands end to end on the real base model, as a user types them: `mlra prepare`,
`validate`, `train`, `evaluate`, `register --gate`, `promote`, `predict` and `status`, each a
real process on one project folder (a few training steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flow_helpers import small_params

pytestmark = pytest.mark.integration


def _mlra(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLRA_HOME": str(project / ".mlra")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLRA_AUDIT", None)
    return subprocess.run(
        [sys.executable, "-m", "mlra.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ok(project: Path, *args: str) -> str:
    done = _mlra(project, *args)
    assert done.returncode == 0, f"mlra {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_train_evaluate_register_promote_predict_from_the_command_line(tmp_path: Path) -> None:
    small_params(tmp_path)
    _ok(tmp_path, "prepare")
    _ok(tmp_path, "validate", "--no-docs")

    trained = json.loads(_ok(tmp_path, "train", "--no-progress", "--no-mlflow", "--json")
                         .splitlines()[-1])  # fmt: skip
    assert trained["metadata"]["steps"] == 2
    assert (tmp_path / "artifacts/candidate/adapter/manifest.json").is_file()

    metrics = json.loads(_ok(tmp_path, "evaluate", "--json"))
    assert metrics["overall"]["champion"] is None
    assert {"base", "candidate"} <= set(metrics["overall"])
    assert (tmp_path / "metrics/eval.md").is_file() and list((tmp_path / "plots").glob("*.png"))

    out = _ok(tmp_path, "register", "artifacts/candidate/adapter", "--metrics", "metrics/eval.json",
              "--validation", "reports/validation/report.json", "--gate", "--by", "ci",
              "--json")  # fmt: skip
    registered = json.loads(out.splitlines()[-1])
    assert registered["version"] == "1" and registered["gate"] == "passed"

    # the repository's policy, first-automatic: the first champion needs no person
    assert "approved by 'policy:automatic'" in _ok(tmp_path, "promote", "1", "--by", "ci")

    predicted = json.loads(
        _ok(tmp_path, "predict", "--alias", "champion", "--json",
            "I love this new phone", "the flight was late again").splitlines()[-1]
    )  # fmt: skip
    assert predicted["version"] == "1"
    assert [p["label"] for p in predicted["predictions"]] != []
    assert all(p["label"] in ("negative", "neutral", "positive") for p in predicted["predictions"])

    status = json.loads(_ok(tmp_path, "status", "--json").splitlines()[-1])
    assert status["champion"] == "1" and status["audit"]["intact"]  # verified with its anchors
    from mlra.audit import open_trail

    actions = [r.action for r in open_trail(tmp_path / ".mlra" / "audit.jsonl").records()]
    for action in ("validation", "training", "evaluation", "registration", "gate", "promotion"):
        assert action in actions, action
