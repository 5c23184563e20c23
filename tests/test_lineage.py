"""mlra.lineage: the hashes and versions a trained adapter carries, checked against their sources
(a real git repository, DVC's own md5, a folder written by ``prepare``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from mlra.data.splits import prepare
from mlra.errors import ConfigError, DataError
from mlra.lineage import (
    data_hash,
    dvc_md5,
    dvc_outs,
    git_commit,
    library_versions,
    md5_file,
    params_hash,
    plain,
)
from tests.data.synthetic import small_params, synthetic_corpus


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit of one tracked file."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.org")
    git(root, "config", "user.name", "test")
    (root / "tracked.txt").write_text("one\n")
    git(root, "add", "tracked.txt")
    git(root, "commit", "-qm", "one")
    return root


def test_git_commit_is_head_and_marks_edited_tracked_files(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head
    (repo / "untracked.txt").write_text("new\n")
    assert git_commit(repo) == head  # untracked files change no code that ran
    (repo / "tracked.txt").write_text("two\n")
    assert git_commit(repo) == head + "-dirty"


def test_git_commit_outside_git_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"


@dataclasses.dataclass(frozen=True)
class Section:
    when: dt.date
    names: tuple[str, ...]
    rate: float


def test_plain_turns_dataclasses_into_json_data() -> None:
    section = Section(dt.date(2026, 1, 5), ("a", "b"), 0.5)
    assert plain(section) == {"when": "2026-01-05", "names": ["a", "b"], "rate": 0.5}
    assert plain({"k": (1, 2)}) == {"k": [1, 2]}


def test_params_hash_is_of_the_values_not_their_form_or_order() -> None:
    section = Section(dt.date(2026, 1, 5), ("a", "b"), 0.5)
    as_data = {"rate": 0.5, "names": ["a", "b"], "when": "2026-01-05"}
    reference = params_hash({"train": section, "data": {"seed": 0}})
    assert len(reference) == 64 and set(reference) <= set("0123456789abcdef")  # hex sha256
    assert params_hash({"data": {"seed": 0}, "train": as_data}) == reference
    assert params_hash({"train": dataclasses.replace(section, rate=0.25), "data": {"seed": 0}}) != (
        reference
    )
    assert params_hash({"train": section, "data": {"seed": 1}}) != reference
    assert params_hash({"train": section}) != reference  # a section left out changes it too


def test_md5_file_is_dvc_s_own_md5(tmp_path: Path) -> None:
    from dvc_data.hashfile.hash import file_md5

    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 5000 + b"\r\nend")  # over one read block, CRLF kept
    assert md5_file(path) == file_md5(str(path))


def write_lock(path: Path, outs: dict[str, str]) -> Path:
    """A dvc.lock in DVC 3's schema with one stage per output."""
    stages = {
        f"stage{i}": {"cmd": "true", "outs": [{"path": out, "md5": md5, "size": 1}]}
        for i, (out, md5) in enumerate(outs.items())
    }
    path.write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}), encoding="utf-8")
    return path


def test_dvc_outs_and_md5_pick_the_output_that_holds_a_path(tmp_path: Path) -> None:
    lock = write_lock(
        tmp_path / "dvc.lock",
        {"data/prepared": "aaa.dir", "data/prepared/golden.parquet": "bbb", "data/feedback": "ccc"},
    )
    assert dvc_outs(lock) == {
        "data/prepared": "aaa.dir",
        "data/prepared/golden.parquet": "bbb",
        "data/feedback": "ccc",
    }
    assert dvc_md5("data/prepared", lock) == "aaa.dir"
    assert dvc_md5("data/prepared/train.parquet", lock) == "aaa.dir"  # inside a folder output
    assert dvc_md5("data/prepared/golden.parquet", lock) == "bbb"  # the closest output wins
    assert dvc_md5("./data/feedback/", lock) == "ccc"  # normalised
    assert dvc_md5("data/prepared_old", lock) is None  # a prefix of a name is not a folder
    assert dvc_md5("reports", lock) is None


def test_dvc_outs_without_a_lock_is_empty_and_a_broken_lock_names_itself(tmp_path: Path) -> None:
    assert dvc_outs(tmp_path / "dvc.lock") == {}
    assert dvc_md5("data/prepared", tmp_path / "dvc.lock") is None
    broken = tmp_path / "broken.lock"
    broken.write_text("stages: [unclosed\n")
    with pytest.raises(ConfigError, match=r"cannot read .*broken\.lock"):
        dvc_outs(broken)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Splits written by the real ``prepare`` over a small synthetic corpus."""
    tmp = tmp_path_factory.mktemp("lineage")
    params = small_params(tmp)
    return prepare(params, corpus=synthetic_corpus(60)).out_dir


def test_data_hash_follows_the_split_contents_not_the_folder(
    prepared: Path, tmp_path: Path
) -> None:
    reference = data_hash(prepared)
    moved = tmp_path / "elsewhere"
    shutil.copytree(prepared, moved)
    assert data_hash(moved) == reference
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["created_at"] = "2000-01-01T00:00:00+00:00"  # when it was written is not content
    (moved / "manifest.json").write_text(json.dumps(manifest))
    assert data_hash(moved) == reference
    manifest["splits"]["train"]["sha256"] = "0" * 64
    (moved / "manifest.json").write_text(json.dumps(manifest))
    assert data_hash(moved) != reference


def test_data_hash_without_a_manifest_says_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest\.json.*run `mlra prepare`"):
        data_hash(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {"train": {"rows": 3}}}))
    with pytest.raises(DataError, match="cannot read the split hashes"):
        data_hash(tmp_path)


def test_library_versions_are_the_installed_ones() -> None:
    import mlra

    versions = library_versions()
    assert versions["mlra"] == mlra.__version__
    assert versions["torch"] == torch.__version__
    assert {"python", "transformers", "lightning", "safetensors"} <= versions.keys()
