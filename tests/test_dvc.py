"""`dvc repro` of the data pipeline in a fresh clone: real DVC, real mlra commands, real corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# What a clone of the repository holds that the pipeline reads (the code comes along whole).
FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore")


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone: the committed files only, no data, no DVC cache."""
    root = tmp_path_factory.mktemp("clone")
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "mlra", root / "mlra", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data" / "inbox").mkdir(parents=True)
    (root / "data" / "inbox" / ".gitkeep").touch()
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "clone"], root)
    return root


def test_dvc_yaml_declares_the_data_stages() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages)[:3] == ["ingest", "prepare", "validate"]  # train, evaluate follow
    for name in ("prepare", "validate"):
        assert stages[name]["cmd"].startswith(f"mlra {name}")
        assert stages[name]["deps"] and stages[name]["params"] and stages[name]["metrics"]
    assert stages["ingest"]["outs"] == [{"${data.feedback_dir}": {"persist": True}}]


def test_repro_in_a_fresh_clone(clone: Path) -> None:
    run(["dvc", "repro", "validate"], clone)
    prepared = clone / "data" / "prepared"
    assert {p.name for p in prepared.iterdir()} >= {
        "train.parquet",
        "val.parquet",
        "test.parquet",
        "golden.parquet",
        "manifest.json",
    }
    report = json.loads((clone / "reports" / "validation" / "report.json").read_text())
    assert report["passed"] is True
    assert (clone / "reports" / "validation" / "data_docs" / "index.html").is_file()

    # outputs are DVC's, not git's: git sees only the lock file, metrics and .gitignore entries
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], clone).stdout
    changed = {line[3:] for line in status.splitlines()}
    assert changed == {
        "dvc.lock",
        "data/.gitignore",
        "reports/.gitignore",
        "reports/prepare.json",
        "reports/validation.json",
    }
    assert "/prepared" in (clone / "data" / ".gitignore").read_text()

    assert "up to date" in run(["dvc", "status", "validate"], clone).stdout.lower()

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], clone).stdout)
    values = json.dumps(metrics)
    assert '"train_rows"' in values and '"passed": 1' in values

    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-qm", "repro"], clone)
    params = (clone / "params.yaml").read_text()
    (clone / "params.yaml").write_text(params.replace("max_label_kl: 0.5", "max_label_kl: 0.25"))
    diff = json.loads(run(["dvc", "params", "diff", "--json"], clone).stdout)
    change = diff["params.yaml"]["drift.max_label_kl"]
    assert (change["old"], change["new"]) == (0.5, 0.25)
    assert "validate" in run(["dvc", "status", "validate"], clone).stdout
