"""Registration against a real MLflow SQLite store: the run, the version, every lineage tag, the
model card, verified fetches, and no secret in any tag, param or record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlra.errors import ConfigError, IntegrityError
from mlra.registry import LINEAGE_TAGS, EvaluationMetrics, dataset_ref, params_hash
from tests.registry_helpers import (
    make_registry,
    metrics,
    policy,
    register,
    store,
    template_db,
    tiny_base,
)

__all__ = ["store", "template_db"]  # fixtures used by name


def test_registration_logs_the_run_and_tags_the_lineage(
    store: dict[str, Any], tmp_path: Path
) -> None:
    registry = make_registry(store)
    version = register(registry, tmp_path, 0.55)
    assert version == "1"
    mv = registry.version(version)
    tags = registry.tags(version)
    assert set(LINEAGE_TAGS) <= set(tags)  # every lineage tag
    assert tags["mlra.git_commit"] == "3f2c1e0"
    assert tags["mlra.data_hash"] == "0123456789abcdef0123456789abcdef.dir"
    assert tags["mlra.params_hash"] == params_hash({"training": {"seed": 0, "lr": 0.001}})
    assert tags["mlra.validation"] == "passed"
    assert tags["mlra.parent_version"] == "none"
    assert tags["mlra.run_id"] == mv.run_id
    assert mv.source.endswith("/artifacts/adapter")
    assert str(store["home"] / "mlartifacts") in mv.source  # not ./mlruns

    # the run: params, metrics, dataset inputs with the DVC hash, artifacts
    run = registry.client.get_run(mv.run_id)
    assert run.data.params["training.seed"] == "0"
    assert run.data.params["adapter.rank"] == "2"
    assert run.data.metrics["overall.candidate.macro_f1"] == pytest.approx(0.55)
    digests = {(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs}
    assert ("train", "0123456789abcdef0123456789abcdef.dir") in digests
    files = {f.path for f in registry.client.list_artifacts(mv.run_id)}
    assert {"adapter", "evaluation", "validation", "model_card.md"} <= files
    plots = {f.path for f in registry.client.list_artifacts(mv.run_id, "evaluation/plots")}
    assert plots == {"evaluation/plots/confusion.png"}

    # the registration record, anchored in the tags
    (record,) = [r for r in registry.trail.records() if r.action == "registration"]
    assert tags["mlra.audit.registration"] == f"{record.seq}:{record.hash}"
    assert record.details["adapter_sha256"] == tags["mlra.adapter_sha256"]
    assert record.subject == {
        "adapter_sha256": tags["mlra.adapter_sha256"],
        "model": "tweets-sentiment",
        "version": "1",
        "run_id": mv.run_id,
        "registry": registry.location,
    }
    assert not Path("mlruns").exists()


def test_model_card_is_the_description(store: dict[str, Any], tmp_path: Path) -> None:
    registry = make_registry(store)
    register(registry, tmp_path, 0.55)
    card = registry.version(1).description
    for section in (
        "## Intended use",
        "## Base model",
        "## Data and its validation",
        "## Metrics per slice (macro-F1) against the base model",
        "## Known limitations",
        "## Approvals",
        "## History (audit trail)",
        "## Lineage",
    ):
        assert section in card
    assert registry.tags(1)["mlra.base_fingerprint"] in card
    # a fixed-width table (MLflow's UI draws Markdown tables without cell spacing), slices in
    # the evaluation's order, the summary row last
    rows = [line.split() for line in card.split("```text\n")[1].split("```")[0].splitlines()]
    assert rows[0] == ["slice", "rows", "base", "champion", "candidate", "Δ"]
    assert rows[1] == ["apple", "300", "0.400", "—", "0.550", "+0.150"]
    assert [r[0] for r in rows[1:]] == ["apple", "claritin", "nfl", "overall"]
    assert "## Gates" not in card  # no gate decision yet
    assert "[macro_f1" not in card and "Plots: [confusion](#/experiments/" in card
    run_card = registry.client.download_artifacts(registry.version(1).run_id, "model_card.md")
    assert Path(run_card).read_text().startswith("# tweets-sentiment — version 1")


def test_a_second_version_records_the_champion_as_parent(
    store: dict[str, Any], tmp_path: Path
) -> None:
    from mlra.promotion import promote

    registry = make_registry(store)
    register(registry, tmp_path, 0.55)
    promote(registry, "1", policy(approval="automatic"), "ops")
    with pytest.raises(ConfigError, match="compare against no champion"):
        register(registry, tmp_path, 0.6, seed=1)  # metrics without champion scores
    version = register(registry, tmp_path, 0.6, 0.55, seed=1)
    assert registry.tags(version)["mlra.parent_version"] == "1"
    assert "against the champion v1" in registry.version(version).description
    record = registry.trail.records()[-1]
    assert record.action == "registration"
    assert record.details["champion_ref"] == {
        "version": "1",
        "adapter_sha256": registry.state().versions["1"].adapter_sha256,
    }


def test_fetch_verifies_files_tags_and_registration_record(
    store: dict[str, Any], tmp_path: Path
) -> None:
    registry = make_registry(store)
    register(registry, tmp_path, 0.55)
    fetched = registry.fetch(1, tmp_path / "ok")
    assert (
        fetched.audit_checked and fetched.manifest.sha256 == registry.tags(1)["mlra.adapter_sha256"]
    )

    # a tag edited in the registry changes nothing fetch checks (the registration record in
    # the trail decides), and reconciliation names the tag
    good = registry.tags(1)["mlra.adapter_sha256"]
    registry.client.set_model_version_tag(registry.model, "1", "mlra.adapter_sha256", "0" * 64)
    assert registry.fetch(1, tmp_path / "tag").manifest.sha256 == good
    assert any(f.subject == "v1 mlra.adapter_sha256" for f in registry.reconcile()), (
        registry.reconcile()
    )
    registry.client.set_model_version_tag(registry.model, "1", "mlra.adapter_sha256", good)
    assert registry.reconcile() == []

    # a file changed in the artifact store
    stored = Path(registry.version(1).source.removeprefix("file://"))
    weights = stored / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(IntegrityError, match=r"adapter_model\.safetensors"):
        registry.fetch(1, tmp_path / "file")
    weights.write_bytes(original)

    # a whole other (self-consistent) adapter swapped in: its hash is not the registered one
    from tests.registry_helpers import tiny_adapter

    shutil.rmtree(stored)
    tiny_adapter(stored, seed=7)
    with pytest.raises(IntegrityError, match="changed after registration"):
        registry.fetch(1, tmp_path / "swap")


def test_load_model_predicts_with_the_verified_adapter(
    store: dict[str, Any], tmp_path: Path
) -> None:
    import torch

    import mlra
    from mlra.classifier import SentenceClassifier, predict
    from tests.registry_helpers import tiny_adapter, tiny_tokenizer

    registry = make_registry(store)
    register(registry, tmp_path, 0.55, seed=3)
    from mlra.promotion import promote

    promote(registry, "1", policy(approval="automatic"), "ops")
    model, tokenizer, _fetched = registry.load_model(
        registry.resolve("champion"), tmp_path / "dl", tiny_base
    )
    texts = ["delayed again", "what a game", "ok"]
    reference = SentenceClassifier(tiny_base()[0], 3)
    mlra.load_adapter(reference, tiny_adapter(tmp_path / "ref", seed=3))
    assert torch.equal(predict(model, tokenizer, texts), predict(reference, tiny_tokenizer, texts))
    with pytest.raises(ConfigError, match="no 'challenger' alias"):
        registry.resolve("challenger")


def test_no_secret_lands_in_a_tag_param_or_record(store: dict[str, Any], tmp_path: Path) -> None:
    from mlra.registry import Registry

    assert Registry("postgresql://ml:hunter2@db:5432/mlflow").location == (
        "postgresql://ml:***@db:5432/mlflow"
    )
    registry = make_registry(store)
    params = {
        "training": {"seed": 0},
        "services": {"db_password": "hunter2", "uri": "https://bob:s3cr3t@mlflow.example/"},
    }
    register(registry, tmp_path, 0.55, params=params)
    mv = registry.version(1)
    run = registry.client.get_run(mv.run_id)
    everything = json.dumps(
        [run.data.params, run.data.tags, mv.tags, mv.description, store["trail"].read_text()]
    )
    assert "hunter2" not in everything and "s3cr3t" not in everything
    assert run.data.params["services.db_password"] == "***"
    assert run.data.params["services.uri"] == "https://bob:***@mlflow.example/"


def test_bad_metrics_are_refused_naming_the_key(tmp_path: Path) -> None:
    data = metrics(0.5)
    del data["slices"]["nfl"]["candidate"]["macro_f1"]
    with pytest.raises(ConfigError, match=r"slices\.nfl\.candidate\.macro_f1"):
        EvaluationMetrics.from_dict(data)
    with pytest.raises(ConfigError, match="missing key 'overall'"):
        EvaluationMetrics.from_dict({"labels": [], "slices": {}})


def test_dataset_ref_takes_the_hash_from_dvc_lock(tmp_path: Path) -> None:
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "prepared" / "train.parquet").write_bytes(b"rows")
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    outs:\n    - path: data/prepared\n"
        "      md5: aaaabbbbccccddddeeeeffff00001111.dir\n"
    )
    import os

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        ref = dataset_ref("data/prepared/train.parquet", "train", lock=lock)
        assert ref.digest == "aaaabbbbccccddddeeeeffff00001111.dir"
        lock.unlink()
        ref = dataset_ref("data/prepared/train.parquet", "train", lock=lock)
        assert ref.digest == "6ed5a3e2ef4d8ebf72b7a4c41c04ce5a" or len(ref.digest) == 32
    finally:
        os.chdir(here)


def test_the_card_fits_mlflows_description_column(store: dict[str, Any], tmp_path: Path) -> None:
    """A PostgreSQL-backed store keeps at most 5,000 characters of a description: a long history
    keeps its newest rows, and the card still says where the rest is."""
    from mlra.promotion import run_gates
    from mlra.registry.card import MAX_DESCRIPTION

    registry = make_registry(store)
    register(registry, tmp_path, 0.55)
    for _ in range(40):
        run_gates(registry, "1", policy())
    card = registry.version(1).description
    assert len(card) <= MAX_DESCRIPTION
    assert "`mlra audit show --version 1` lists all" in card
    assert "## Metrics per slice" in card and "## Gates" in card
