"""Shared pieces of the registry / promotion / status tests: a real MLflow SQLite store per test
(copied from one migrated template, since creating the schema takes seconds), tiny real adapter
artifacts on a random BertModel, and evaluation metrics JSON of the agreed shape."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_tiny_bert

REPO = Path(__file__).resolve().parent.parent
SLICES = ("apple", "claritin", "nfl")
POLICY = {
    "min_overall_gain": 0.01,
    "max_slice_regression": 0.02,
    "min_slice_support": 50,
    "approval": "manual",
}


def scores(macro_f1: float, support: int = 300) -> dict[str, Any]:
    return {
        "accuracy": macro_f1,
        "macro_f1": macro_f1,
        "f1": {"negative": macro_f1, "neutral": macro_f1, "positive": macro_f1},
        "support": support,
    }


def metrics(
    candidate: Mapping[str, float] | float,
    champion: Mapping[str, float] | float | None = None,
    base: float = 0.4,
    support: int = 300,
) -> dict[str, Any]:
    """Evaluation JSON: per slice base / candidate / champion macro-F1 (a float: every slice)."""

    def per_slice(value: Mapping[str, float] | float) -> dict[str, float]:
        if isinstance(value, Mapping):
            return {s: value.get(s, 0.5) for s in SLICES}
        return dict.fromkeys(SLICES, value)

    cand = per_slice(candidate)
    champ = per_slice(champion) if champion is not None else None

    def mean(values: Mapping[str, float]) -> float:
        return sum(values.values()) / len(values)

    return {
        "labels": ["negative", "neutral", "positive"],
        "slices": {
            s: {
                "base": scores(base, support),
                "candidate": scores(cand[s], support),
                "champion": scores(champ[s], support) if champ else None,
            }
            for s in SLICES
        },
        "overall": {
            "base": scores(base, support * len(SLICES)),
            "candidate": scores(mean(cand), support * len(SLICES)),
            "champion": scores(mean(champ), support * len(SLICES)) if champ else None,
        },
    }


def tiny_tokenizer(texts: list[str], **_: Any) -> dict[str, Any]:
    """Characters to ids below the tiny BERT's vocabulary (64), padded to the longest text."""
    import torch

    rows = [[2 + ord(c) % 60 for c in t[:30]] or [1] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}


def tiny_base() -> tuple[Any, Any]:
    return make_tiny_bert(), tiny_tokenizer


def tiny_adapter(path: Path, seed: int = 0) -> Path:
    """A real adapter artifact (with the classification head) on the tiny random BERT."""
    import torch

    import mlra
    from mlra.classifier import SentenceClassifier

    model = SentenceClassifier(make_tiny_bert(), 3)
    mlra.add_adapter(
        model, "tweets", mlra.AdapterSpec(rank=2, alpha=4.0, targets=["query", "value"])
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in mlra.adapter_parameters(model, "tweets"):
            p.normal_(0, 0.1)
    mlra.save_adapter(model, "tweets", path, modules_to_save=["head"], metadata={"seed": seed})
    return path


def validation_report(path: Path, passed: bool = True) -> Path:
    path.write_text(json.dumps({"passed": passed, "failed": [] if passed else ["train: rows"]}))
    return path


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema, created once per session."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlruns.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.search_experiments()
    return db


@pytest.fixture
def store(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh store, trail and project folder for one test (environment points at them)."""
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(template_db, home / "mlruns.db")
    uri = f"sqlite:///{home / 'mlruns.db'}"
    monkeypatch.setenv("MLRA_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLRA_AUDIT", str(home / "audit.jsonl"))
    monkeypatch.setenv("MLRA_KEYS", str(home / "keys"))
    return {"home": home, "uri": uri, "trail": home / "audit.jsonl"}


def make_registry(store: Mapping[str, Any], model: str = "tweets-sentiment") -> Any:
    from mlra.audit import open_trail
    from mlra.registry import Registry

    return Registry(store["uri"], model=model, trail=open_trail(store["trail"]))


def register(
    registry: Any,
    tmp: Path,
    candidate: Mapping[str, float] | float,
    champion: Mapping[str, float] | float | None = None,
    *,
    seed: int = 0,
    passed: bool = True,
    **kwargs: Any,
) -> str:
    """Register a tiny adapter with the given metrics; returns the version."""
    from mlra.registry import DatasetRef

    folder = tmp / f"v-{seed}-{len(list(tmp.iterdir()))}"
    folder.mkdir()
    adapter = tiny_adapter(folder / "adapter", seed)
    data = metrics(candidate, champion)
    if champion is not None:  # what `mlra evaluate` records: the champion it compared with
        data["champion_ref"] = champion_ref(registry)
    (folder / "metrics.json").write_text(json.dumps(data))
    plot = folder / "confusion.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    mv = registry.register(
        adapter,
        metrics=folder / "metrics.json",
        validation=validation_report(folder / "report.json", passed),
        params=kwargs.pop("params", {"training": {"seed": seed, "lr": 0.001}}),
        datasets=[
            DatasetRef("train", "data/prepared", "0123456789abcdef0123456789abcdef.dir", rows=1000),
            DatasetRef(
                "golden", "data/prepared", "0123456789abcdef0123456789abcdef.dir", "evaluation"
            ),
        ],
        plots=[plot],
        commit="3f2c1e0",
        **kwargs,
    )
    return str(mv.version)


def champion_ref(registry: Any) -> dict[str, Any] | None:
    """The champion that serves now (by the trail), as `mlra evaluate` names it."""
    state = registry.state()
    if state.champion is None:
        return None
    return {
        "version": state.champion,
        "adapter_sha256": state.versions[state.champion].adapter_sha256,
    }


def policy(**overrides: Any) -> Any:
    from mlra.promotion import PromotionParams

    return PromotionParams(**{**POLICY, **overrides})


def params_file(path: Path, **overrides: Any) -> Path:
    """The repository's params.yaml with registry / promotion sections for the CLI."""
    import yaml

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["registry"] = {"model_name": "tweets-sentiment", "experiment": "mlra-test"}
    data["promotion"] = {**POLICY, **overrides}
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(args: list[str], env: Mapping[str, str] | None = None) -> Any:
    import os
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "mlra.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
