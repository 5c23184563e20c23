"""Evaluation: metrics per golden-set slice for the base, the candidate and the champion; plots.

Accuracy misleads on the skewed target domains (a majority-class guess scores 0.85 on Claritin), so
every report carries macro-F1 beside it, and per-class F1.

:func:`evaluate` runs three models in one pass over the golden rows:

- **base** — the frozen MiniLM with the adapter disabled and the *base head* (fitted on the source
  domain; saved beside the candidate by ``mlra train``): the model without adaptation;
- **candidate** — the adapter just trained, with its own head;
- **champion** — the adapter now serving (a folder holding ``adapter/``), when there is one.

Slices: each domain (the source domain shows forgetting), ``targets`` (all target-domain rows
pooled; also written as ``overall``, what adaptation is for), ``targets_without_nfl`` (NFL looks
labelled for stance, not sentiment), and ``all`` (every evaluated row). A slice whose rarest class
has fewer than ``noisy_class_rows`` rows is marked noisy: its macro-F1 moves with a few rows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch

from mlra.candidate import ADAPTER_DIR, load_base_head
from mlra.data.splits import cap_per_domain
from mlra.errors import ConfigError
from mlra.metrics import Scores, confusion, scores

if TYPE_CHECKING:
    import pandas as pd

    from mlra.classifier import SentenceClassifier
    from mlra.config import DataParams, EvaluateParams

__all__ = [
    "MODELS",
    "EvaluationResult",
    "Scores",
    "SliceResult",
    "check_overall",
    "comparison_table",
    "confusion",
    "evaluate",
    "golden_rows",
    "label_indices",
    "score_slices",
    "scores",
    "write_outputs",
]

MODELS: Final = ("base", "candidate", "champion")


@dataclass(frozen=True)
class SliceResult:
    """One slice: scores and confusion matrix per model, and how many rows each class has."""

    name: str
    scores: dict[str, Scores]  # model -> scores
    confusion: dict[str, list[list[int]]]  # model -> [true][pred]
    class_rows: dict[str, int]
    noisy: bool

    def delta(self, against: str) -> float | None:
        """The candidate's macro-F1 minus ``against``'s (None: that model did not run)."""
        if against not in self.scores:
            return None
        return self.scores["candidate"].macro_f1 - self.scores[against].macro_f1


@dataclass(frozen=True)
class EvaluationResult:
    """Every slice, in report order, and what was evaluated."""

    labels: tuple[str, ...]
    slices: dict[str, SliceResult]
    models: tuple[str, ...]  # which of MODELS ran (no champion: base and candidate)
    overall: str  # the slice that is also written as "overall"
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The metrics JSON (``metrics/eval.json``), read by DVC, the registry and the gates:
        ``{"labels", "slices": {name: {base, candidate, champion}}, "overall": {...}, ...}``,
        each score ``{accuracy, macro_f1, f1, support}`` (champion None when there is none)."""

        def row(sl: SliceResult) -> dict[str, Any]:
            out: dict[str, Any] = {m: sl.scores[m].to_dict() if m in sl.scores else None
                                   for m in MODELS}  # fmt: skip
            out["delta_macro_f1_vs_base"] = sl.delta("base")
            if "champion" in sl.scores:
                out["delta_macro_f1_vs_champion"] = sl.delta("champion")
            out["noisy"] = sl.noisy
            out["class_rows"] = dict(sl.class_rows)
            return out

        return {
            "labels": list(self.labels),
            "models": list(self.models),
            "slices": {name: row(sl) for name, sl in self.slices.items()},
            "overall": row(self.slices[self.overall]),
            "overall_slice": self.overall,
            "info": self.info,
            # which champion the candidate was compared with: `mlra register` refuses metrics
            # whose champion no longer serves (by the audit trail)
            "champion_ref": self.info.get("champion_ref"),
        }


# -- running the models ---------------------------------------------------------------------------


def _champion_ref(folder: Path, sha256: str) -> dict[str, Any]:
    """The champion a folder holds: the version that ``Registry.fetch_champion`` wrote beside
    it (``champion.json``) and the sha256 of the adapter actually loaded."""
    import json

    version = None
    try:
        written = json.loads((folder / "champion.json").read_text(encoding="utf-8"))
        if isinstance(written, dict) and written.get("adapter_sha256") == sha256:
            version = str(written.get("version"))
    except (OSError, ValueError):
        pass
    return {"version": version, "adapter_sha256": sha256}


def _predict_all(
    model: SentenceClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    heads: Mapping[str, tuple[str | None, torch.nn.Linear]],
    *,
    batch_size: int,
    max_length: int,
) -> dict[str, torch.Tensor]:
    """Predictions per model; each is (adapter name or None for the base, head). The frozen
    layers below every adapter run once for all models (:func:`embed_texts_per_setting`), in
    chunks of rows of similar length, with progress on stderr (:func:`_progress`)."""
    from mlra.classifier import embed_texts_per_setting

    names = list(heads)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together
    chunk = batch_size * 8
    parts: list[list[torch.Tensor]] = [[] for _ in names]
    with _progress(len(texts), f"evaluating {len(names)} models on the golden sets") as advance:
        for start in range(0, len(order), chunk):
            rows = [texts[i] for i in order[start : start + chunk]]
            features = embed_texts_per_setting(
                model,
                tokenizer,
                rows,
                [heads[m][0] for m in names],
                batch_size=batch_size,
                max_length=max_length,
            )
            with torch.no_grad():
                for part, m, f in zip(parts, names, features, strict=True):
                    part.append(heads[m][1](f).argmax(-1))
            advance(len(rows))
    back = torch.empty(len(texts), dtype=torch.long)  # input order again
    back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(texts))
    return {
        m: (torch.cat(part) if part else torch.empty(0, dtype=torch.long))[back]
        for m, part in zip(names, parts, strict=True)
    }


@contextmanager
def _progress(total: int, what: str, every_s: float = 10.0) -> Iterator[Callable[[int], None]]:
    """Progress of a long step on stderr: a Rich bar on a terminal, else (a log, a Prefect run)
    a line every ``every_s`` seconds; nothing for a step that ends sooner."""
    import sys
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    started = last = time.monotonic()
    done = 0
    if console.is_terminal:
        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(what, total=total)
            yield lambda n: bar.advance(task, n)
        return

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= every_s and done < total:
            last = now
            print(f"{what}: {done:,}/{total:,} rows, {now - started:.0f} s", file=sys.stderr)

    yield advance


def evaluate(
    data: DataParams,
    ep: EvaluateParams,
    candidate_dir: str | Path,
    *,
    champion_dir: str | Path | None = None,
    prepared_dir: str | Path | None = None,
    model: SentenceClassifier | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    domains: Sequence[str] | None = None,
    overall: str | None = None,
) -> EvaluationResult:
    """Score base, candidate and (when ``champion_dir`` holds one) champion on the golden sets.

    ``candidate_dir`` is what ``mlra train`` wrote: ``adapter/`` (verified strictly: hashes and
    base fingerprint) and the base head (verified against the sha256 in the adapter's manifest).
    ``model``/``tokenizer`` default to the packaged MiniLM (tests pass a tiny one).

    ``domains`` restricts the golden rows to those domains (default: the source and every target
    domain) and ``overall`` names the slice written as ``overall`` (default ``targets``): a
    module is judged on its own slice with ``domains=[module], overall=module``.
    """
    import copy

    import mlra
    from mlra.classifier import SentenceClassifier

    candidate = Path(candidate_dir)
    manifest = mlra.inspect_adapter(candidate / ADAPTER_DIR)
    meta = manifest.metadata
    labels = tuple(meta.get("labels") or ())
    if not labels or "base_head" not in meta:
        raise ConfigError(
            f"{candidate / ADAPTER_DIR} lacks the labels or base head that `mlra train` records; "
            "evaluate a folder written by `mlra train`"
        )
    length = int(max_length or meta.get("params", {}).get("train", {}).get("max_length", 64))
    if model is None:
        from mlra.base_model import load_base_model

        encoder, tokenizer = load_base_model()
        model = SentenceClassifier(encoder, len(labels), pooling=str(meta.get("pooling", "mean")))
    hidden = int(model.head.in_features)
    heads: dict[str, tuple[str | None, torch.nn.Linear]] = {
        "base": (None, load_base_head(candidate, meta["base_head"]["sha256"], hidden, len(labels)))
    }
    mlra.load_adapter(model, candidate / ADAPTER_DIR, name="candidate")
    heads["candidate"] = ("candidate", copy.deepcopy(model.head))
    champion = Path(champion_dir) if champion_dir else None
    champion_ref: dict[str, Any] | None = None
    if champion is not None and (champion / ADAPTER_DIR).is_dir():
        mlra.load_adapter(model, champion / ADAPTER_DIR, name="champion")
        heads["champion"] = ("champion", copy.deepcopy(model.head))
        champion_ref = _champion_ref(champion, mlra.inspect_adapter(champion / ADAPTER_DIR).sha256)
    else:
        champion = None

    golden = golden_rows(data, ep, prepared_dir, domains)
    truth = label_indices(golden["label"], labels)
    predicted = _predict_all(model, tokenizer, list(golden["text"]), heads,
                             batch_size=ep.batch_size, max_length=length)  # fmt: skip
    slices = score_slices(data, ep, labels, list(golden["domain"]), truth, predicted,
                          keep=overall or "targets", distinct=domains is not None)  # fmt: skip
    overall = check_overall(slices, overall)
    info: dict[str, Any] = {
        "candidate": str(candidate / ADAPTER_DIR),
        "candidate_sha256": manifest.sha256,
        "champion": str(champion / ADAPTER_DIR) if champion else None,
        "champion_ref": champion_ref,
        "golden_rows": len(golden),
        "max_rows_per_slice": ep.max_rows_per_slice,
        "source_domain": data.source_domain,
        "noisy_class_rows": ep.noisy_class_rows,
    }
    if domains is not None:  # a restricted evaluation (one module's slice) says so
        info["domains"] = list(domains)
    return EvaluationResult(labels, slices, tuple(heads), overall, info)


# -- golden rows and slices (shared with the bundle's evaluation, mlra.bundle_eval) -------------


def golden_rows(
    data: DataParams,
    ep: EvaluateParams,
    prepared_dir: str | Path | None = None,
    domains: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The golden rows of ``domains`` (default: the source and every target domain), capped at
    ``ep.max_rows_per_slice`` per domain. A name that is not a configured domain is an error:
    an empty evaluation must not pass for a good one."""
    from mlra.data.splits import load_split

    known = [data.source_domain, *data.target_domains]
    if domains is None:
        domains = known
    unknown = [d for d in domains if d not in known]
    if unknown or not domains:
        raise ConfigError(
            f"evaluation domains must be some of {', '.join(known)}, got "
            f"{', '.join(map(repr, unknown)) if unknown else 'none'}"
        )
    golden = load_split(prepared_dir or data.prepared_dir, "golden")
    return cap_per_domain(golden[golden["domain"].isin(list(domains))], ep.max_rows_per_slice)


def label_indices(values: Iterable[str], labels: Sequence[str]) -> torch.Tensor:
    """Class index per label name (``labels`` order)."""
    index = {label: k for k, label in enumerate(labels)}
    return torch.tensor([index[x] for x in values], dtype=torch.long)


def score_slices(
    data: DataParams,
    ep: EvaluateParams,
    labels: Sequence[str],
    domain: Sequence[str],
    truth: torch.Tensor,
    predicted: Mapping[str, torch.Tensor],
    *,
    keep: str | None = None,
    distinct: bool = False,
) -> dict[str, SliceResult]:
    """Scores per slice for each model's predictions (model -> class index per row), in report
    order: each domain, ``targets``, ``targets_without_nfl``, ``all``; empty slices are left out.
    ``distinct`` also leaves out a pooled slice that holds the same rows as an earlier one (one
    module's evaluation: ``targets`` and ``all`` are its domain again), except ``keep``."""
    domains = [data.source_domain, *data.target_domains]
    masks: dict[str, list[bool]] = {d: [x == d for x in domain] for d in domains}
    masks["targets"] = [x in data.target_domains for x in domain]
    if "nfl" in data.target_domains:
        masks["targets_without_nfl"] = [x in data.target_domains and x != "nfl" for x in domain]
    masks["all"] = [True] * len(domain)
    slices: dict[str, SliceResult] = {}
    for name, mask in masks.items():
        rows_in = torch.tensor(mask, dtype=torch.bool)
        if not bool(rows_in.any()):
            continue
        repeats = any(masks[earlier] == mask for earlier in slices)
        if distinct and repeats and name not in domains and name != keep:
            continue
        y = truth[rows_in]
        rows = {label: int((y == k).sum()) for k, label in enumerate(labels)}
        slices[name] = SliceResult(
            name=name,
            scores={m: scores(y, p[rows_in], labels) for m, p in predicted.items()},
            confusion={
                m: confusion(y, p[rows_in], len(labels)).tolist() for m, p in predicted.items()
            },
            class_rows=rows,
            noisy=min(rows.values()) < ep.noisy_class_rows,
        )
    return slices


def check_overall(slices: Mapping[str, SliceResult], overall: str | None) -> str:
    """The slice written as ``overall`` (default ``targets``); it must have golden rows."""
    name = overall or "targets"
    if name not in slices:
        raise ConfigError(
            f"the overall slice {name!r} has no golden rows (slices with rows: "
            f"{', '.join(slices) or 'none'}); check the prepared golden set and the domains"
        )
    return name


# -- reporting ------------------------------------------------------------------------------------


def comparison_table(result: EvaluationResult) -> str:
    """The comparison as a Markdown table: rows per slice, accuracy and macro-F1 per model."""
    models = result.models
    head = ["slice", "rows"] + [f"{m} acc" for m in models] + [f"{m} F1" for m in models]
    head += ["Δ F1 vs base"] + (["Δ F1 vs champion"] if "champion" in models else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sl in result.slices.values():
        s = sl.scores
        cells = [sl.name + (" †" if sl.noisy else ""), str(s["candidate"].support)]
        cells += [f"{s[m].accuracy:.3f}" for m in models] + [f"{s[m].macro_f1:.3f}" for m in models]
        cells += [f"{sl.delta(m):+.3f}" for m in ("base", "champion") if m in models]
        lines.append("| " + " | ".join(cells) + " |")
    noisy = result.info.get("noisy_class_rows")
    lines += [
        "",
        f"† fewer than {noisy} golden rows in some class: macro-F1 moves with a few rows here.",
        f"`{result.info['source_domain']}` is the source domain: its change is what adaptation "
        "costs there. `targets` (also `overall`) pools every target-domain row; NFL looks labelled "
        "for stance, hence `targets_without_nfl`.",
    ]
    return "\n".join(lines) + "\n"


def _plot_confusions(result: EvaluationResult, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for sl in result.slices.values():
        models = [m for m in result.models if m in sl.confusion]
        fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.6), squeeze=False)
        for ax, m in zip(axes[0], models, strict=True):
            matrix = sl.confusion[m]
            ax.imshow(matrix, cmap="Blues")
            top = max(max(r) for r in matrix) or 1
            for i, r in enumerate(matrix):
                for j, v in enumerate(r):
                    ax.text(j, i, str(v), ha="center", va="center",
                            color="white" if v > top / 2 else "black", fontsize=9)  # fmt: skip
            ticks = range(len(result.labels))
            ax.set_xticks(ticks, [x[:3] for x in result.labels])
            ax.set_yticks(ticks, [x[:3] for x in result.labels])
            ax.set_xlabel("predicted")
            if ax is axes[0][0]:
                ax.set_ylabel("true")
            ax.set_title(f"{m}: macro-F1 {sl.scores[m].macro_f1:.2f}", fontsize=10)
        note = " — few rows in a class: noisy" if sl.noisy else ""
        fig.suptitle(f"{sl.name} ({sl.scores['candidate'].support} golden rows){note}", fontsize=11)
        fig.tight_layout()
        path = folder / f"confusion_{sl.name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_bars(result: EvaluationResult, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.slices)
    models = list(result.models)
    colours = {"base": "#9e9e9e", "candidate": "#1f77b4", "champion": "#ff7f0e"}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 4.2))
    for k, m in enumerate(models):
        values = [result.slices[n].scores[m].macro_f1 for n in names]
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width, label=m, color=colours[m])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(names)),
                  [n + (" †" if result.slices[n].noisy else "") for n in names],
                  rotation=25, ha="right")  # fmt: skip
    ax.set_ylabel("golden macro-F1")
    ax.set_ylim(0, 1)
    ax.set_title("Golden-set macro-F1 per slice († few rows in a class: noisy)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = folder / "macro_f1_by_slice.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(
    result: EvaluationResult,
    metrics_file: str | Path,
    report_file: str | Path,
    plots_dir: str | Path,
) -> list[Path]:
    """Write the metrics JSON, the Markdown table and the PNG plots; return the plot paths."""
    metrics, report, plots = Path(metrics_file), Path(report_file), Path(plots_dir)
    for folder in (metrics.parent, report.parent, plots):
        folder.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.png"):  # a slice that disappeared must not leave its old plot
        old.unlink()
    data = result.to_dict()
    _check_finite(data)
    tmp = metrics.with_suffix(metrics.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, metrics)
    report.write_text(comparison_table(result), encoding="utf-8")
    return [*_plot_confusions(result, plots), _plot_bars(result, plots)]


def _check_finite(value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a metric is not finite: {value}")
    if isinstance(value, Mapping):
        for v in value.values():
            _check_finite(v)
    elif isinstance(value, list):
        for v in value:
            _check_finite(v)
