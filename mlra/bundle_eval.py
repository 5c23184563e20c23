"""Evaluation of a bundle (:mod:`mlra.bundle`): the whole of what would serve, routing included.

:func:`evaluate_bundle` scores three models on every golden slice, as :func:`mlra.evaluation.
evaluate` does for one adapter:

- **base** — the frozen encoder with the base head (the router folder's), on every row;
- **candidate** — the new bundle;
- **champion** — the bundle serving now, when there is one.

Golden rows do not name their domain to a bundle: the router decides, as it does for requests that
do not name theirs, so routing errors count. ``info`` adds, per domain of the router, its
accuracy (``router_accuracy``: the share of the domain's golden rows served by the domain's own
module — the base for the source domain) and where the rows went (``routed_to``); the champion's
under ``champion_router_accuracy`` / ``champion_routed_to``.

:func:`bundle_gates` are the bundle's own gates: the source domain is not forgotten (its macro-F1
within ``modules.max_source_regression`` of the base's) and the router is accurate on each domain.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlra.bundle import Bundle, BundlePrediction
from mlra.bundle_pass import predict_together
from mlra.errors import ConfigError
from mlra.evaluation import (
    EvaluationResult,
    _progress,
    check_overall,
    comparison_table,
    golden_rows,
    label_indices,
    score_slices,
    write_outputs,
)

if TYPE_CHECKING:
    from mlra.classifier import SentenceClassifier
    from mlra.config import DataParams, EvaluateParams, ModulesParams
    from mlra.governance import GateResult

__all__ = [
    "BASE",
    "ROUTER_PLOT",
    "BundleSource",
    "bundle_gates",
    "evaluate_bundle",
    "plot_router_confusion",
    "write_bundle_outputs",
]

BASE: Final = "base"  # how a destination that is the base model is written in reports
ROUTER_PLOT: Final = "router_confusion.png"


@dataclass(frozen=True)
class BundleSource:
    """Where a bundle lies: module -> candidate folder (holding ``adapter/``), the router folder,
    the router's expected sha256, and ``ref``: what the caller knows it as (a bundle record),
    written to the metrics as ``candidate_ref`` / ``champion_ref``."""

    modules: Mapping[str, Path]
    router_dir: Path
    router_sha256: str | None = None
    ref: Mapping[str, Any] | None = field(default=None)

    def load(self, mp: ModulesParams, model: SentenceClassifier | None, tokenizer: Any,
             max_length: int | None) -> Bundle:  # fmt: skip
        """The bundle, verified, with the router settings of ``mp``."""
        return Bundle.load(
            {m: Path(p) for m, p in self.modules.items()}, Path(self.router_dir),
            router_sha256=self.router_sha256, min_confidence=mp.router.min_confidence,
            fallback=mp.router.fallback, model=model, tokenizer=tokenizer, max_length=max_length,
        )  # fmt: skip


def evaluate_bundle(
    data: DataParams,
    ep: EvaluateParams,
    mp: ModulesParams,
    candidate: BundleSource,
    current: BundleSource | None = None,
    *,
    prepared_dir: str | Path | None = None,
    model: SentenceClassifier | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
) -> EvaluationResult:
    """Score base, the candidate bundle and (when ``current`` is given) the serving bundle on
    every golden slice, rows routed by each bundle's router. ``model``/``tokenizer`` default to
    the packaged MiniLM (a given model is copied for the serving bundle: each bundle holds its
    own adapters). One pass over the golden rows: the frozen layers below every adapter run once
    per batch for the three models (:func:`mlra.bundle_pass.predict_together`), each model's
    predictions exactly what its own ``predict`` gives."""
    golden = golden_rows(data, ep, prepared_dir)
    spare = copy.deepcopy(model) if model is not None and current is not None else None
    new = candidate.load(mp, model, tokenizer, max_length)
    old = current.load(mp, spare, tokenizer, max_length) if current is not None else None
    if old is not None and old.labels != new.labels:
        raise ConfigError(f"the serving bundle predicts {list(old.labels)}, the new one "
                          f"{list(new.labels)}: they cannot be compared")  # fmt: skip
    texts, domain = list(golden["text"]), list(golden["domain"])
    truth = label_indices(golden["label"], new.labels)
    jobs: dict[str, tuple[Bundle, list[str | None] | None]] = {
        "base": (new, [new.source_domain] * len(texts)),  # every row to the base
        "candidate": (new, None),  # rows routed by each bundle's router
    }
    if old is not None:
        jobs["champion"] = (old, None)
    with _progress(len(texts), f"evaluating {len(jobs)} models on the golden sets") as step:
        # one pass: the layers below the adapters run once per batch for all three
        out = dict(zip(jobs, predict_together(list(jobs.values()), texts, ep.batch_size,
                                              progress=step), strict=True))  # fmt: skip
    served = {m: p for m, p in out.items() if m != "base"}
    predicted = {m: p.label for m, p in out.items()}
    slices = score_slices(data, ep, new.labels, domain, truth, predicted)
    info: dict[str, Any] = {
        "kind": "bundle",
        "candidate": new.describe(),
        "candidate_sha256": new.sha256,
        "candidate_ref": dict(candidate.ref) if candidate.ref is not None else None,
        "champion": old.describe() if old is not None else None,
        "champion_ref": dict(current.ref) if current and current.ref is not None else None,
        "golden_rows": len(golden),
        "max_rows_per_slice": ep.max_rows_per_slice,
        "source_domain": data.source_domain,
        "noisy_class_rows": ep.noisy_class_rows,
    }
    for model_name, prefix in (("candidate", ""), ("champion", "champion_")):
        if model_name in served:
            bundle = new if model_name == "candidate" else old
            assert bundle is not None
            info |= _routing(bundle, served[model_name], domain, prefix)
    return EvaluationResult(new.labels, slices, tuple(predicted), check_overall(slices, None), info)


def _routing(
    bundle: Bundle, prediction: BundlePrediction, domain: Sequence[str], prefix: str
) -> dict[str, Any]:
    """Router accuracy per router domain, where each domain's rows went, and how many fell back."""
    routed_to: dict[str, dict[str, int]] = {}
    fell_back: dict[str, int] = {}
    for d, module, how in zip(domain, prediction.modules, prediction.how, strict=True):
        where = routed_to.setdefault(d, {})
        where[module or BASE] = where.get(module or BASE, 0) + 1
        fell_back[d] = fell_back.get(d, 0) + (how == "fallback")
    accuracy = {}
    for d in bundle.router.domains:
        if d in routed_to:
            own = bundle.router.modules[d] or BASE
            accuracy[d] = routed_to[d].get(own, 0) / sum(routed_to[d].values())
    return {
        f"{prefix}router_accuracy": accuracy,
        f"{prefix}router_rows": {d: sum(routed_to[d].values()) for d in accuracy},
        f"{prefix}routed_to": routed_to,
        f"{prefix}fell_back": fell_back,
    }


# -- gates ----------------------------------------------------------------------------------------


def bundle_gates(
    result: EvaluationResult | Mapping[str, Any], mp: ModulesParams, min_slice_support: int
) -> list[GateResult]:
    """The bundle's gates on its evaluation (the result, or its metrics JSON as a mapping):

    - ``source_forgetting``: the candidate's macro-F1 on the source domain is at least the base's
      minus ``mp.max_source_regression`` (no source golden rows: refused);
    - ``router_accuracy``: on each router domain, at least ``mp.router.min_accuracy``.

    A domain with fewer than ``min_slice_support`` golden rows is reported but not gated."""
    from mlra.governance import GateResult

    data = result.to_dict() if isinstance(result, EvaluationResult) else result
    info = data.get("info") or {}
    source = str(info.get("source_domain"))
    row = (data.get("slices") or {}).get(source)
    if row is None:
        source_gate = GateResult("source_forgetting", False,
                                 f"no golden rows of the source domain {source!r}: forgetting "
                                 "cannot be judged")  # fmt: skip
    else:
        base, cand = float(row["base"]["macro_f1"]), float(row["candidate"]["macro_f1"])
        support = int(row["candidate"]["support"])
        detail = (
            f"{source} macro-F1 {cand:.4f} against the base's {base:.4f} ({cand - base:+.4f}; "
            f"largest drop allowed {mp.max_source_regression:.4f})"
        )
        if support < min_slice_support:
            source_gate = GateResult("source_forgetting", True,
                                     f"{detail}; not gated (support {support} < "
                                     f"{min_slice_support})")  # fmt: skip
        else:
            source_gate = GateResult("source_forgetting",
                                     cand >= base - mp.max_source_regression, detail)  # fmt: skip
    accuracy: Mapping[str, float] = info.get("router_accuracy") or {}
    rows: Mapping[str, int] = info.get("router_rows") or {}
    gated = {d: a for d, a in accuracy.items() if rows.get(d, 0) >= min_slice_support}
    low = {d: a for d, a in gated.items() if a < mp.router.min_accuracy}
    skipped = sorted(set(accuracy) - set(gated))
    detail = ", ".join(f"{d} {a:.3f}" for d, a in accuracy.items()) or "no router domain scored"
    detail = f"router accuracy {detail} (minimum {mp.router.min_accuracy:.3f})"
    if low:
        detail += f"; below it: {', '.join(sorted(low))}"
    if skipped:
        detail += f"; not gated (support < {min_slice_support}): {', '.join(skipped)}"
    # like every slice gate: too few golden rows to judge is reported, not refused
    router_gate = GateResult("router_accuracy", not low, detail)
    return [source_gate, router_gate]


# -- outputs --------------------------------------------------------------------------------------


def write_bundle_outputs(
    result: EvaluationResult,
    metrics_file: str | Path,
    report_file: str | Path,
    plots_dir: str | Path,
) -> list[Path]:
    """:func:`mlra.evaluation.write_outputs` plus the router's accuracy in the report and its
    confusion (true domain vs where rows went) as ``router_confusion.png``."""
    plots = write_outputs(result, metrics_file, report_file, plots_dir)
    Path(report_file).write_text(comparison_table(result) + "\n" + _router_table(result),
                                 encoding="utf-8")  # fmt: skip
    return [*plots, plot_router_confusion(result, Path(plots_dir))]


def _router_table(result: EvaluationResult) -> str:
    info = result.info
    models = [(m, p) for m, p in (("candidate", ""), ("champion", "champion_"))
              if f"{p}router_accuracy" in info]  # fmt: skip
    lines = ["| domain | rows | " + " | ".join(f"{m} router accuracy" for m, _ in models) + " |",
             "|" + "---|" * (2 + len(models))]  # fmt: skip
    for d, n in info.get("router_rows", {}).items():
        cells = [f"{info[f'{p}router_accuracy'].get(d, float('nan')):.3f}" for _, p in models]
        lines.append(f"| {d} | {n} | " + " | ".join(cells) + " |")
    return (
        "\n".join(lines) + "\n\nRouter accuracy: the share of a domain's golden rows served by "
        "its own module (the base for the source domain) when rows do not name their domain.\n"
    )


def plot_router_confusion(result: EvaluationResult, folder: Path) -> Path:
    """One panel per bundle: golden rows per true domain (rows) and destination (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = result.info
    panels = [(m, info[f"{p}routed_to"]) for m, p in (("candidate", ""), ("champion", "champion_"))
              if f"{p}routed_to" in info]  # fmt: skip
    if not panels:
        raise ConfigError("the evaluation holds no routing (not a bundle evaluation)")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (name, routed) in zip(axes[0], panels, strict=True):
        true = list(routed)
        dest = sorted({k for v in routed.values() for k in v}, key=lambda k: (k != BASE, k))
        matrix = [[routed[t].get(k, 0) for k in dest] for t in true]
        ax.imshow(matrix, cmap="Blues")
        top = max((max(r) for r in matrix), default=1) or 1
        for i, r in enumerate(matrix):
            for j, v in enumerate(r):
                ax.text(j, i, str(v), ha="center", va="center",
                        color="white" if v > top / 2 else "black", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(dest)), dest, rotation=30, ha="right")
        ax.set_yticks(range(len(true)), true)
        ax.set_xlabel("served by")
        ax.set_ylabel("true domain")
        ax.set_title(f"{name} bundle: routing of golden rows", fontsize=10)
    fig.tight_layout()
    path = folder / ROUTER_PLOT
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
