"""The embedded store reader (:mod:`mlra.registry.embedded`): what ``mlra status`` and
``mlra predict`` read from a SQLite MLflow store without importing MLflow is what MLflow itself
answers, every check on it still runs, and any store it does not know is left to MLflow."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlra.errors import IntegrityError
from mlra.promotion import approve, promote, run_gates, status
from mlra.registry.embedded import EmbeddedStore, open_embedded
from tests.registry_helpers import (
    REPO,
    make_registry,
    params_file,
    policy,
    register,
    store,
    template_db,
)

__all__ = ["store", "template_db"]  # fixtures used by name


def _read_only(store: dict[str, Any], model: str = "tweets-sentiment") -> Any:
    from mlra.audit import open_trail
    from mlra.registry import Registry

    return Registry(store["uri"], model=model, trail=open_trail(store["trail"]), read_only=True)


def _world(store: dict[str, Any], tmp_path: Path) -> Any:
    """v1 champion, v2 challenger, v3 deleted, a second model, a deleted run and a newer one."""
    registry = make_registry(store)
    register(registry, tmp_path, 0.55)
    run_gates(registry, "1", policy())
    approve(registry, "1", "Ada", "ok")
    promote(registry, "1", policy(), "ops")
    register(registry, tmp_path, 0.6, 0.55, seed=2)
    run_gates(registry, "2", policy())
    register(registry, tmp_path, 0.61, 0.55, seed=3)
    client = registry.client
    client.delete_model_version(registry.model, "3")
    client.create_registered_model("other's model", tags={"team": "b"})
    experiment = client.get_experiment_by_name(registry.experiment).experiment_id
    client.delete_run(client.create_run(experiment).info.run_id)
    time.sleep(0.01)  # distinct start times
    client.set_terminated(client.create_run(experiment, run_name="newest").info.run_id)
    return registry


def test_it_answers_what_mlflow_answers(store: dict[str, Any], tmp_path: Path) -> None:
    registry = _world(store, tmp_path)
    client = registry.client
    reader = open_embedded(store["uri"])
    assert isinstance(reader, EmbeddedStore)  # MLflow's schema is one it knows (else: upgrade)

    def rows(found: Any) -> list[tuple[Any, ...]]:
        return sorted((int(v.version), v.source, v.run_id, v.tags) for v in found)

    for name in (registry.model, "other's model"):
        theirs, ours = client.get_registered_model(name), reader.get_registered_model(name)
        assert (ours.tags, ours.aliases) == (theirs.tags, theirs.aliases)
        listed = "name = '{}'".format(name.replace("'", "\\'"))
        assert rows(reader.search_model_versions(listed)) == rows(
            client.search_model_versions(listed)
        )
    assert [v[0] for v in rows(reader.search_model_versions("name = 'tweets-sentiment'"))] == [1, 2]
    for version in ("1", "2"):
        assert rows([reader.get_model_version(registry.model, version)]) == rows(
            [client.get_model_version(registry.model, version)]
        )
    for absent in (lambda: reader.get_registered_model("nope"),
                   lambda: reader.get_model_version(registry.model, "3")):  # fmt: skip
        with pytest.raises(Exception) as caught:
            absent()
        assert getattr(caught.value, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"

    experiment = client.get_experiment_by_name(registry.experiment)
    assert reader.get_experiment_by_name(registry.experiment).experiment_id == (
        experiment.experiment_id
    )
    assert reader.get_experiment_by_name("nope") is None
    newest = ["attributes.start_time DESC"]
    theirs_runs = client.search_runs([experiment.experiment_id], order_by=newest, max_results=10)
    ours_runs = reader.search_runs([experiment.experiment_id], order_by=newest, max_results=10)
    assert [r.info.run_id for r in ours_runs] == [r.info.run_id for r in theirs_runs]
    assert ours_runs[0].info.run_name == "newest" == theirs_runs[0].info.run_name


def test_status_and_fetch_read_without_mlflow_the_same(
    store: dict[str, Any], tmp_path: Path
) -> None:
    registry = _world(store, tmp_path)
    fast = _read_only(store)
    assert status(fast) == status(registry)
    assert isinstance(fast._reads, EmbeddedStore)
    assert status(fast)["audit"]["findings"] == [
        "v3: registered in the trail but gone from the registry"
    ]

    # what a person edits by hand in MLflow is found the same way
    registry.client.set_registered_model_alias(registry.model, "champion", "2")
    registry.client.set_model_version_tag(registry.model, "1", "mlra.validation", "passed?")
    assert status(_read_only(store)) == status(registry)
    assert len(status(registry)["audit"]["findings"]) == 3
    registry.client.set_registered_model_alias(registry.model, "champion", "1")

    # the artifact is fetched as MLflow would, and verified the same: an edit is refused
    fetched = fast.fetch("1", tmp_path / "fetched")
    files = sorted(p.name for p in fetched.path.iterdir())
    assert files == sorted(p.name for p in registry.fetch("1", tmp_path / "slow").path.iterdir())
    stored = Path(registry.version("1").source.removeprefix("file://"))
    (stored / "adapter_config.json").write_text("{}")
    with pytest.raises(IntegrityError):
        _read_only(store).fetch("1", tmp_path / "again")


def test_stores_it_does_not_know_are_left_to_mlflow(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Path(store["uri"].removeprefix("sqlite:///"))
    assert open_embedded(store["uri"]) is not None
    assert open_embedded(f"sqlite:///{tmp_path / 'none.db'}") is None
    assert open_embedded(f"{store['uri']}?timeout=5") is None
    assert open_embedded("postgresql://u@db/mlflow") is None
    assert open_embedded("http://127.0.0.1:5000") is None
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert open_embedded(store["uri"]) is None
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    older = tmp_path / "older.db"
    shutil.copy(db, older)
    with sqlite3.connect(older) as con:
        con.execute("UPDATE alembic_version SET version_num = 'a0b1c2d3e4f5'")
    assert open_embedded(f"sqlite:///{older}") is None
    (tmp_path / "junk.db").write_bytes(b"not a database")
    assert open_embedded(f"sqlite:///{tmp_path / 'junk.db'}") is None
    # a registry on such a store reads through MLflow, which says what to do as before
    from mlra.audit import open_trail
    from mlra.registry import Registry

    slow = Registry(f"sqlite:///{older}", trail=open_trail(store["trail"]), read_only=True)
    with pytest.raises(Exception, match="out-of-date database schema"):
        slow.versions()


_NO_MLFLOW = """
import json
import sys
from mlra.cli import main
code = main(["status", "--json", "--params", sys.argv[1]])
from mlra.audit import open_trail
from mlra.registry import Registry
from tests.registry_helpers import tiny_base
registry = Registry(sys.argv[2], model="tweets-sentiment", trail=open_trail(sys.argv[3]),
                    read_only=True)
model, _, fetched = registry.load_model(registry.resolve("champion"), sys.argv[4], tiny_base)
print(json.dumps({"code": code, "mlflow": "mlflow" in sys.modules, "version": fetched.version}))
"""


def test_status_and_predict_import_no_mlflow(store: dict[str, Any], tmp_path: Path) -> None:
    """The point of the reader: `mlra status`, and predict's resolve-fetch-load path, pay for
    no MLflow import on an embedded store."""
    registry = make_registry(store)
    register(registry, tmp_path, 0.55)
    run_gates(registry, "1", policy())
    approve(registry, "1", "Ada", "ok")
    promote(registry, "1", policy(), "ops")
    params = params_file(tmp_path / "params.yaml")
    done = subprocess.run(
        [sys.executable, "-c", _NO_MLFLOW, str(params), store["uri"],
         str(store["trail"]), str(tmp_path / "dst")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"code": 0, "mlflow": False, "version": "1"}
    assert json.loads(done.stdout.splitlines()[-2])["champion"] == "1"
    assert registry.alias("champion") == "1"
