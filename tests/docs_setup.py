"""The project tests/test_docs.py runs the registry examples in: v1, an adapter on the packaged
MiniLM, registered and promoted through the CLI (the first champion: params.yaml's policy lets it
through), and the files the documented lines name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.registry_helpers import metrics, validation_report

ADAPTERS = ("artifacts/v1/adapter", "artifacts/candidate/adapter", "artifacts/other/adapter")


def _adapters(root: Path) -> None:
    """Three adapters of the same MiniLM classifier, with different (small, random) weights."""
    import torch

    import mlra
    from mlra.base_model import load_base_model
    from mlra.classifier import SentenceClassifier
    from mlra.data import LABELS

    encoder, _ = load_base_model()
    model = SentenceClassifier(encoder, len(LABELS))
    mlra.add_adapter(
        model, "tweets", mlra.AdapterSpec(rank=4, alpha=8.0, targets=["query", "value"])
    )
    for seed, folder in enumerate(ADAPTERS):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in mlra.adapter_parameters(model, "tweets"):
                p.normal_(std=0.02)
        mlra.save_adapter(model, "tweets", root / folder, modules_to_save=["head"],
                          metadata={"labels": list(LABELS)})  # fmt: skip


def registry_project(root: Path, template_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlra.cli import main
    from mlra.registry import Registry

    (root / ".mlra").mkdir(exist_ok=True)
    shutil.copy(template_db, root / ".mlra" / "mlruns.db")  # a migrated store: seconds saved
    _adapters(root)
    (root / "reports" / "validation").mkdir(parents=True)
    report = validation_report(root / "reports" / "validation" / "report.json")
    (root / "first.json").write_text(json.dumps(metrics(0.55)))
    for argv in (["register", ADAPTERS[0], "--metrics", "first.json", "--validation", str(report),
                  "--gate"], ["promote", "1"]):  # fmt: skip
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, f"set-up `mlra {' '.join(argv)}`: {out.out}{out.err}"
    state = Registry(read_only=True).state()
    assert state.champion == "1"
    against_v1 = {
        **metrics(0.6, 0.55),
        "champion_ref": {"version": "1", "adapter_sha256": state.versions["1"].adapter_sha256},
    }
    (root / "metrics").mkdir()
    for name in ("metrics/eval.json", "metrics.json"):
        (root / name).write_text(json.dumps(against_v1))
    (root / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\n")
