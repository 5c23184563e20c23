"""The modular retrain (``modules.mode: modular``) as real Prefect flow runs on the packaged MiniLM:
the first run trains every module in one routed pass and promotes each on its own; a week of
feedback for one domain retrains that module alone; promoting or rolling back one module leaves
the others' answers bit-for-bit the same; the bundle record says what served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.flow_helpers import small_params

MODULES = {"mode": "modular", "domains": ["apple", "claritin"], "min_new_rows": 5}
ROUTER = {"layer": 3, "min_confidence": 0.0, "fallback": "base", "min_accuracy": 0.0}


def _one_domain_feedback(params: Any, inbox: Path, domain: str) -> Path:
    """Next week's simulated feedback, only the rows of ``domain``, as the field would send it."""
    from mlra.data.feedback import simulate_next

    scratch = inbox.parent / "scratch"
    written = simulate_next(params, scratch)
    assert written is not None
    import pandas as pd

    csv = written.suffix == ".csv"
    rows = pd.read_csv(written, dtype=str) if csv else pd.read_json(written, lines=True, dtype=str)
    keep = rows[rows["domain"] == domain]
    assert len(keep) >= MODULES["min_new_rows"], f"{len(keep)} {domain} rows"
    inbox.mkdir(parents=True, exist_ok=True)
    out = inbox / written.name
    if csv:
        keep.to_csv(out, index=False)
    else:
        keep.to_json(out, orient="records", lines=True, force_ascii=False)
    return out


def _bundle_answers(params: Any, folder: Path, texts: list[str], domains: list[str]) -> Any:
    """The serving bundle's answers (champions fetched and verified, the recorded router)."""
    from mlra.modules import load_bundle

    bundle, _record = load_bundle(params, folder)
    return bundle.predict(texts, domains)


def test_modules_retrain_promote_and_roll_back_one_by_one(project: Path) -> None:
    from flows import retrain
    from mlra import modules
    from mlra.audit import default_trail
    from mlra.config import load_params
    from mlra.promotion import rollback

    path = small_params(project, modules={**MODULES, "router": ROUTER})
    params = load_params(path)
    inbox = project / "data" / "inbox"

    # 1. every module trains in one pass and is promoted on its own; bundle 1 serves
    first = retrain(params=str(path))
    assert first["outcome"] == "promoted", first
    rows = {r["module"]: r for r in first["modules"]}
    assert set(rows) == {"apple", "claritin"}
    assert all(r["due"] and r["why"] == "never trained" for r in rows.values())
    assert all(r["outcome"] == "promoted" and r["version"] == "1" for r in rows.values()), rows
    for m in rows:
        assert modules.registry_for(params, m).alias("champion") == "1"
    records = default_trail().records()
    trainings = [r for r in records if r.action == "training"]
    assert {r.subject["module"] for r in trainings} == {"apple", "claritin"}
    assert len({r.details["mlflow_run_id"] for r in trainings}) == 1  # one pass for both
    bundle = modules.bundle_at(records, params.registry.model_name)
    assert bundle is not None and bundle.versions() == {"apple": "1", "claritin": "1"}
    assert bundle.router is not None and first["bundle"] == str(bundle)

    texts = ["my iphone screen broke again", "claritin works great for me", "flight delayed"]
    domains = ["apple", "claritin", params.data.source_domain]
    before = _bundle_answers(params, project / "serving-1", texts, domains)

    # 2. feedback for apple only: apple alone retrains (claritin is not due), v2 of apple
    _one_domain_feedback(params, inbox, "apple")
    second = retrain(params=str(path), simulate=False)
    rows = {r["module"]: r for r in second["modules"]}
    assert rows["apple"]["due"] and not rows["claritin"]["due"], rows
    assert rows["apple"]["version"] == "2" and "version" not in rows["claritin"]
    assert rows["claritin"]["outcome"] == "kept"
    trained_now = [r for r in default_trail().records()[len(records) :] if r.action == "training"]
    assert [r.subject["module"] for r in trained_now] == ["apple"]

    # 3. promote apple v2 (if the run did not) and roll it back: claritin's answers never move
    apple = modules.registry_for(params, "apple")
    if apple.alias("champion") != "2":
        from mlra.promotion import approve, promote

        approve(apple, "2", "reviewer", "apple slice holds", params.promotion)
        promote(apple, "2", params.promotion, "ops")
        modules.record_bundle(params, "ops", "apple v2")
    after = _bundle_answers(params, project / "serving-2", texts, domains)
    assert torch.equal(after.probabilities[1:], before.probabilities[1:])  # claritin, source
    rollback(apple, "oncall", "field complaints")
    modules.record_bundle(params, "oncall", "apple back to v1")
    back = _bundle_answers(params, project / "serving-3", texts, domains)
    assert torch.equal(back.probabilities, before.probabilities)  # v1 again, bit for bit
    assert modules.bundle_findings(default_trail().records()) == []
    assert default_trail().verify().intact

    # 4. what operators see: each module and the bundle in `mlra status`; `mlra predict` routes
    status = _cli(project, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert (
        "  apple:" in status.stdout and "champion v1, challenger none, 2 versions" in status.stdout
    )
    assert "bundle:             bundle 4" in status.stdout
    answer = _cli(project, "predict", "--domain", "claritin", "claritin works great for me")
    assert answer.returncode == 0, answer.stderr
    assert "\tclaritin v1 (domain)\tclaritin works great for me" in answer.stdout
    assert "every module and the router verified" in answer.stderr


def _cli(project: Path, *args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mlra.cli", *args], cwd=project,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
