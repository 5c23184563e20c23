"""Section 8: how long the commands people type take, as whole processes (imports included):
``mlra --help``, ``mlra status`` on a fresh project and on a project with a registered champion,
and ``mlra predict`` with that champion (download, verification against the trail, signature, the
packaged base model, one prediction).

The project is built here: the packaged MiniLM with an adapter, registered on an embedded SQLite
store, promoted by the automatic policy. Each command runs ``cli_rounds`` times; the figure is the
median wall time in seconds (not a ratio: the targets are absolute, what a person waits). On this
store ``status`` and ``predict`` read the registry without importing MLflow
(:mod:`mlra.registry.embedded`); what remains of ``predict`` is mostly torch and transformers.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Section
from benchmarks.workloads import Context, nudge_adapters


def _project(root: Path, ctx: Context) -> dict[str, str]:
    """A project with v1 as champion; returns its environment."""
    import mlra
    from mlra.audit import open_trail
    from mlra.config import PromotionParams
    from mlra.promotion import promote
    from mlra.registry import Registry

    env = {
        "MLRA_HOME": str(root / ".mlra"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / '.mlra' / 'mlruns.db'}",
        "MLRA_AUDIT": str(root / ".mlra" / "audit.jsonl"),
        "MLRA_KEYS": str(root / "keys"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        model = ctx.models.mlra()
        nudge_adapters(model)
        adapter = root / "candidate" / "adapter"
        mlra.save_adapter(model, "a", adapter, modules_to_save=["head"],
                          metadata={"labels": ["negative", "neutral", "positive"]})  # fmt: skip
        score = {"accuracy": 0.6, "macro_f1": 0.6, "f1": {}, "support": 300}
        base = {**score, "macro_f1": 0.4}
        metrics = {
            "labels": ["negative", "neutral", "positive"],
            "slices": {"airline": {"base": base, "candidate": score, "champion": None}},
            "overall": {"base": base, "candidate": score, "champion": None},
        }
        registry = Registry(env["MLFLOW_TRACKING_URI"], trail=open_trail(env["MLRA_AUDIT"]))
        registry.register(adapter, metrics=metrics, validation={"passed": True}, params={})
        policy = PromotionParams(0.01, 0.02, 50, "automatic")
        promote(registry, "1", policy, "bench")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return env


def _seconds(argv: list[str], env: dict[str, str], cwd: Path, rounds: int) -> dict[str, Any]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mlra.cli", *argv], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"mlra {' '.join(argv)} failed: {done.stderr[-500:]}")
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def measure(ctx: Context) -> dict[str, Any]:
    rounds = ctx.settings.cli_rounds
    root = Path(tempfile.mkdtemp(prefix="mlra-bench-cli-"))
    repo = Path(__file__).resolve().parent.parent
    try:
        shutil.copy(repo / "params.yaml", root / "params.yaml")
        fresh = {**os.environ, "MLRA_HOME": str(root / "fresh"), "MLRA_KEYS": str(root / "k0")}
        fresh.pop("MLFLOW_TRACKING_URI", None)
        fresh.pop("MLRA_AUDIT", None)
        env = {**os.environ, **_project(root, ctx)}
        return {
            "help": _seconds(["--help"], fresh, root, rounds),
            "status_fresh": _seconds(["status"], fresh, root, rounds),
            "status": _seconds(["status"], env, root, rounds),
            "predict": _seconds(["predict", "my flight was delayed again"], env, root, rounds),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(res: dict[str, Any]) -> list[str]:
    lines = [
        "### 8. Commands people type (whole processes)",
        "",
        "Measures: wall time of the whole `mlra` process, imports included, median of the rounds "
        "(min–max); `status` and `predict` on a project whose champion is a MiniLM adapter.",
        "",
        "| command | seconds |",
        "|---|---|",
    ]
    names = {
        "help": "mlra --help",
        "status_fresh": "mlra status (fresh project)",
        "status": "mlra status (a champion)",
        "predict": "mlra predict (one text)",
    }
    for key, label in names.items():
        r = res[key]
        lines.append(f"| `{label}` | {r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f}) |")
    return lines


SECTION = Section("cli", measure, report)
