"""The validation gate: Great Expectations suites over the prepared data → a ValidationReport.

Two checks, one Great Expectations checkpoint (ephemeral context: nothing but the report and the
Data Docs is written):

* **training data** (``train.parquet``): schema, types, no nulls, label set, text-length bounds,
  unique ids, enough rows, no id shared with the val/test/golden splits, and each label's share
  of the rows within ``validation.{min,max}_label_share``.
* **drift** of the newest accepted feedback batch against the training rows: label-distribution
  divergence, text-length quantiles, share of rows in domains the training data lacks.

The reference for drift is the training data reweighted to the batch's domain mix: a batch of
Claritin feedback is compared with Claritin training rows, so a batch from other domains than
training's majority is not, by itself, drift. Great Expectations 1.x ships no working distribution
tests (its KS/chi-square expectations raise NotImplementedError), so the label KL divergence is
computed here and checked by an expectation over a one-row statistics table; length quantiles and
the unseen-domain share are checked by Great Expectations on the feedback rows themselves.

:func:`validate` writes ``report.json``, ``report.html`` (one self-contained page: readable offline)
and the Data Docs site under ``out_dir`` (its pages rewritten to need no CDN) and, when the gate
fails, raises :class:`~mlra.errors.ValidationFailed` listing every failed expectation.
"""

# pandas and pyarrow ship no type information (pandas-stubs is not a dependency)
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlra.config import Params
from mlra.data.source import LABELS, fold_text
from mlra.data.splits import COLUMNS, SPLITS, load_split
from mlra.errors import ValidationFailed

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "DriftStats",
    "ExpectationOutcome",
    "ValidationReport",
    "brief",
    "drift_stats",
    "label_kl",
    "validate",
]

REPORT: Final = "report.json"
HTML: Final = "report.html"
DOCS: Final = "data_docs"
_SMOOTHING: Final = 0.5  # add-½ counts: a label absent on one side gives a finite divergence


@dataclasses.dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result: which check, on what, pass/fail and what was observed."""

    check: str  # "training_data", "split_overlap", "label_balance" or "drift"
    name: str  # what it states, in words
    expectation: str  # the Great Expectations type, e.g. expect_column_values_to_be_unique
    kwargs: dict[str, Any]
    success: bool
    observed: Any


@dataclasses.dataclass(frozen=True)
class DriftStats:
    """Drift statistics of one feedback batch against the (domain-reweighted) training rows."""

    batch: str | None
    rows: int
    label_kl: float
    feedback_labels: dict[str, float]
    reference_labels: dict[str, float]
    length_quantiles: dict[str, tuple[float, float]]  # "q0.5" -> (feedback, reference)
    max_length_shift: float
    unseen_domain_share: float
    unseen_domains: list[str]


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """What the gate found. ``passed`` is True when every expectation passed."""

    passed: bool
    created_at: str
    duration_s: float
    prepared_dir: str
    rows: dict[str, int]
    expectations: list[ExpectationOutcome]
    drift_status: str  # "checked", or "skipped: <why>"
    drift: DriftStats | None
    data_docs: str | None
    html: str | None = None  # mlra's own one-file report (report.html): readable offline

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]

    def raise_if_failed(self) -> None:
        """Raise :class:`~mlra.errors.ValidationFailed` listing each failed expectation."""
        if self.passed:
            return
        lines = [f"  {o.check}: {o.name} (observed {brief(o.observed)})" for o in self.failed]
        raise ValidationFailed(
            f"the validation gate failed {len(self.failed)} of {len(self.expectations)} "
            "expectations:\n" + "\n".join(lines)
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failed"] = [f"{e.check}: {e.name}" for e in self.failed]
        return data

    def to_json(self) -> str:
        """The report as indented JSON (``report.json``)."""
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"

    def metrics(self) -> dict[str, Any]:
        """Flat numbers for ``dvc metrics show``."""
        out: dict[str, Any] = {
            "passed": int(self.passed),
            "expectations": len(self.expectations),
            "failed": len(self.failed),
            "train_rows": self.rows.get("train", 0),
        }
        if self.drift is not None:
            out["drift_label_kl"] = round(self.drift.label_kl, 6)
            out["drift_max_length_shift"] = round(self.drift.max_length_shift, 6)
            out["drift_unseen_domain_share"] = round(self.drift.unseen_domain_share, 6)
            out["drift_rows"] = self.drift.rows
        return out


def brief(value: object) -> str:
    """An observed value in a few words: counts and examples, not whole lists."""
    if isinstance(value, dict) and "unexpected_count" in value:
        sample = value.get("partial_unexpected_list") or []
        return f"{value['unexpected_count']} unexpected" + (
            f", e.g. {sample[:3]}" if sample else ""
        )
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


# ------------------------------------------------------------------------------------- drift


def label_kl(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """KL(p ‖ q) in nats over :data:`LABELS`; both are (unnormalised) label counts or weights."""
    p_total = sum(p.get(k, 0.0) + _SMOOTHING for k in LABELS)
    q_total = sum(q.get(k, 0.0) + _SMOOTHING for k in LABELS)
    kl = 0.0
    for k in LABELS:
        pk = (p.get(k, 0.0) + _SMOOTHING) / p_total
        qk = (q.get(k, 0.0) + _SMOOTHING) / q_total
        kl += pk * math.log(pk / qk)
    return kl


def _weighted_quantiles(
    values: np.ndarray[Any, Any], weights: np.ndarray[Any, Any], qs: Sequence[float]
) -> list[float]:
    import numpy as np

    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    cum = cum / cum[-1]
    return [float(v[min(int(np.searchsorted(cum, q)), len(v) - 1)]) for q in qs]


def drift_stats(
    feedback: pd.DataFrame, train: pd.DataFrame, params: Params, batch: str | None = None
) -> DriftStats:
    """Drift statistics of ``feedback`` against ``train``.

    The reference weights each training row by ``share of its domain in the batch / rows of its
    domain in training``, so it has the batch's domain mix. Rows of domains training lacks are
    left out of the label and length comparison and counted in ``unseen_domain_share``.
    """
    import numpy as np

    cfg = params.drift
    train_domains = set(train["domain"])
    seen = feedback[feedback["domain"].isin(train_domains)]
    unseen = sorted(set(feedback["domain"]) - train_domains)
    unseen_share = 1.0 - len(seen) / len(feedback) if len(feedback) else 0.0

    batch_mix = seen["domain"].value_counts(normalize=True)
    train_counts = train["domain"].value_counts()
    weights = train["domain"].map(lambda d: batch_mix.get(d, 0.0) / train_counts[d]).to_numpy()
    if weights.sum() <= 0:  # nothing seen: compare with training as a whole
        weights = np.ones(len(train))
    ref_labels = {
        k: float(weights[(train["label"] == k).to_numpy()].sum()) / float(weights.sum())
        for k in LABELS
    }
    fb_counts = seen["label"].value_counts()
    fb_labels = {k: float(fb_counts.get(k, 0)) / max(len(seen), 1) for k in LABELS}
    # the reference as counts: its shares times the training rows it rests on
    n_ref = int(train["domain"].isin(set(seen["domain"])).sum()) or len(train)
    kl = label_kl(
        {k: float(fb_counts.get(k, 0)) for k in LABELS},
        {k: v * n_ref for k, v in ref_labels.items()},
    )

    qs = cfg.length_quantiles
    ref_q = _weighted_quantiles(train["text"].str.len().to_numpy(), weights, qs)
    if len(seen):
        fb_q = [float(x) for x in np.quantile(seen["text"].str.len().to_numpy(), qs)]
    else:
        fb_q = [float("nan")] * len(qs)
    shifts = [abs(f / r - 1.0) if r > 0 else math.inf for f, r in zip(fb_q, ref_q, strict=True)]
    stats = DriftStats(
        batch=batch,
        rows=len(feedback),
        label_kl=float(kl),
        feedback_labels=fb_labels,
        reference_labels=ref_labels,
        length_quantiles={f"q{q:g}": (f, r) for q, f, r in zip(qs, fb_q, ref_q, strict=True)},
        max_length_shift=max(shifts) if len(seen) else 0.0,
        unseen_domain_share=unseen_share,
        unseen_domains=unseen,
    )
    return stats


# --------------------------------------------------------------------------------- the gate


def _gx_context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # the ephemeral context announces its temporary docs folder at INFO: not news to a user
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # the ephemeral context comes with a docs site in a temporary folder: only ours is wanted
    for name in list(context.get_site_names()):
        context.delete_data_docs_site(name)
    if docs_dir is not None:
        context.add_data_docs_site(
            "mlra",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
            },
        )
    return context


def _training_expectations(params: Params) -> list[tuple[str, Any]]:
    gxe: Any = importlib.import_module("great_expectations.expectations")

    d = params.data
    exps: list[tuple[str, Any]] = [
        (
            f"columns are exactly {', '.join(COLUMNS)}",
            gxe.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=True),
        ),
        (
            f"at least validation.min_train_rows={params.validation.min_train_rows} rows",
            gxe.ExpectTableRowCountToBeBetween(min_value=params.validation.min_train_rows),
        ),
    ]
    for column in COLUMNS:
        exps.append((f"{column} is never null", gxe.ExpectColumnValuesToNotBeNull(column=column)))
        exps.append(
            (f"{column} is a string", gxe.ExpectColumnValuesToBeOfType(column=column, type_="str"))
        )
    exps += [
        (
            f"label is one of {', '.join(LABELS)}",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(LABELS)),
        ),
        (
            f"text length within [{d.text_min_chars}, {d.text_max_chars}]",
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=d.text_min_chars, max_value=d.text_max_chars
            ),
        ),
        ("ids are unique", gxe.ExpectColumnValuesToBeUnique(column="id")),
        (
            "origin is corpus or feedback",
            gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=["corpus", "feedback"]),
        ),
    ]
    return exps


def _observed(result: Any) -> Any:
    raw = dict(result.result or {})
    if "observed_value" in raw:
        return raw["observed_value"]
    keep = ("unexpected_count", "unexpected_percent", "partial_unexpected_list")
    observed = {k: raw[k] for k in keep if k in raw}
    if "partial_unexpected_list" in observed:
        observed["partial_unexpected_list"] = list(observed["partial_unexpected_list"])[:5]
    return observed


def _kwargs(config: Any) -> dict[str, Any]:
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k not in ("batch_id",)}
    for key, value in list(kwargs.items()):
        if isinstance(value, list) and len(value) > 10:
            kwargs[key] = f"<{len(value)} values>"
    return kwargs


def _drift_checks(
    params: Params, stats: DriftStats, train_domains: list[str]
) -> tuple[pd.DataFrame, list[tuple[str, Any]], list[tuple[str, Any]]]:
    """The drift statistics table, the expectations on the feedback rows, and those on the table."""
    import pandas as pd

    gxe: Any = importlib.import_module("great_expectations.expectations")
    cfg = params.drift
    table = pd.DataFrame(
        {"label_kl": [stats.label_kl]}
        | {f"length_{k}": [fb_q] for k, (fb_q, _) in stats.length_quantiles.items()}
    )
    on_rows = [
        (
            f"share of rows in domains unseen in training <= "
            f"drift.max_unseen_domain_share={cfg.max_unseen_domain_share}",
            gxe.ExpectColumnValuesToBeInSet(
                column="domain", value_set=train_domains, mostly=1.0 - cfg.max_unseen_domain_share
            ),
        ),
    ]
    on_table = [
        (
            f"label KL divergence <= drift.max_label_kl={cfg.max_label_kl}",
            gxe.ExpectColumnValuesToBeBetween(
                column="label_kl", min_value=0.0, max_value=cfg.max_label_kl
            ),
        )
    ]
    for key, (_, ref_q) in stats.length_quantiles.items():
        on_table.append(
            (
                f"text-length {key} within ±drift.max_length_shift={cfg.max_length_shift} "
                f"of training's ({ref_q:g} characters)",
                gxe.ExpectColumnValuesToBeBetween(
                    column=f"length_{key}",
                    min_value=ref_q * (1 - cfg.max_length_shift),
                    max_value=ref_q * (1 + cfg.max_length_shift),
                ),
            )
        )
    return table, on_rows, on_table


def _run_checks(
    context: Any,
    batches: Mapping[str, pd.DataFrame],
    suites: Mapping[str, list[tuple[str, Any]]],
) -> list[ExpectationOutcome]:
    """Run each suite on its batch (one GX validation definition each), in order."""
    import great_expectations as gx

    source = context.data_sources.add_pandas("mlra")
    outcomes: list[ExpectationOutcome] = []
    for name, expectations in suites.items():
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for i, (label, expectation) in enumerate(expectations):
            expectation.meta = {"mlra_name": label, "mlra_order": i}
            suite.add_expectation(expectation)
        batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch_def, suite=suite)
        )
        frame = batches[name]
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
        )
        for r in sorted(result.results, key=lambda r: r.expectation_config.meta["mlra_order"]):
            config = r.expectation_config
            observed = _observed(r)
            if name == "drift_stats":  # a one-row statistics table: the statistic itself
                observed = float(frame[config.kwargs["column"]].iloc[0])
            elif name == "label_balance":
                shares = zip(frame["label"], frame["share"], strict=True)
                observed = {k: round(float(v), 4) for k, v in shares}
            outcomes.append(
                ExpectationOutcome(
                    check="drift" if name == "drift_stats" else name,
                    name=str(config.meta["mlra_name"]),
                    expectation=str(config.type),
                    kwargs=_kwargs(config),
                    success=bool(r.success),
                    observed=observed,
                )
            )
    return outcomes


def validate(
    params: Params,
    prepared_dir: str | Path | None = None,
    feedback_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    raise_on_failure: bool = True,
    data_docs: bool = True,
) -> ValidationReport:
    """Run the gate over ``prepared_dir`` (and the newest batch in ``feedback_dir``).

    Writes ``out_dir/report.json``, ``out_dir/report.html`` (self-contained) and, with
    ``data_docs``, the Great Expectations Data Docs site at ``out_dir/data_docs/index.html``
    (offline-readable; when ``out_dir`` is given). Raises
    :class:`~mlra.errors.ValidationFailed` naming every failed expectation when the gate fails
    and ``raise_on_failure`` is set (the report is written first); otherwise returns it.
    Missing prepared splits raise :class:`~mlra.errors.DataError`.
    """
    started = time.perf_counter()
    import pandas as pd

    from mlra.data.ingest import newest_batch

    prepared = Path(prepared_dir if prepared_dir is not None else params.data.prepared_dir)
    fb_dir = Path(feedback_dir if feedback_dir is not None else params.data.feedback_dir)
    out = Path(out_dir) if out_dir is not None else None
    splits = {name: load_split(prepared, name) for name in SPLITS}
    train = splits["train"]

    # statistics the expectations check
    counts = train["label"].value_counts()
    shares = pd.DataFrame(
        {"label": list(LABELS), "share": [counts.get(k, 0) / max(len(train), 1) for k in LABELS]}
    )
    batch, feedback = newest_batch(fb_dir)
    stats: DriftStats | None = None
    if batch is None:
        drift_status = f"skipped: no accepted feedback in {fb_dir}"
    elif len(feedback) < params.drift.min_rows:
        drift_status = (
            f"skipped: newest batch {batch} has {len(feedback)} rows, "
            f"fewer than drift.min_rows={params.drift.min_rows}"
        )
    else:
        drift_status = "checked"
        stats = drift_stats(feedback, train, params, batch)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gxe: Any = importlib.import_module("great_expectations.expectations")

    docs_dir = out / DOCS if out is not None and data_docs else None
    context = _gx_context(docs_dir)
    all_splits = pd.concat(
        [f[["id"]].assign(split=n, text_key=f["text"].map(fold_text)) for n, f in splits.items()],
        ignore_index=True,
    )
    batches: dict[str, pd.DataFrame] = {
        "training_data": train,
        "split_overlap": all_splits,
        "label_balance": shares,
    }
    suites: dict[str, list[tuple[str, Any]]] = {
        "training_data": _training_expectations(params),
        "split_overlap": [
            (
                "no id is in two splits (train, val, test, golden)",
                gxe.ExpectColumnValuesToBeUnique(column="id"),
            ),
            (
                "no text (case- and whitespace-folded) is in two splits",
                gxe.ExpectColumnValuesToBeUnique(column="text_key"),
            ),
        ],
        "label_balance": [
            (
                f"each label's share within [{params.validation.min_label_share}, "
                f"{params.validation.max_label_share}]",
                gxe.ExpectColumnValuesToBeBetween(
                    column="share",
                    min_value=params.validation.min_label_share,
                    max_value=params.validation.max_label_share,
                ),
            )
        ],
    }
    if stats is not None:
        batches["drift"] = feedback
        batches["drift_stats"], suites["drift"], suites["drift_stats"] = _drift_checks(
            params, stats, sorted(set(train["domain"]))
        )

    outcomes = _run_checks(context, batches, suites)
    docs_index = None
    if docs_dir is not None:
        from mlra._validation_html import make_offline

        context.build_data_docs(site_names=["mlra"])
        make_offline(docs_dir)  # GX's pages load their styles from CDNs
        docs_index = str(docs_dir / "index.html")

    report = ValidationReport(
        passed=all(o.success for o in outcomes),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - started, 3),
        prepared_dir=str(prepared),
        rows={name: len(frame) for name, frame in splits.items()},
        expectations=outcomes,
        drift_status=drift_status,
        drift=stats,
        data_docs=docs_index,
        html=str(out / HTML) if out is not None else None,
    )
    if out is not None:
        from mlra._validation_html import render

        out.mkdir(parents=True, exist_ok=True)
        docs_link = f"{DOCS}/index.html" if docs_index else None
        for name, text in ((HTML, render(report, docs_link)), (REPORT, report.to_json())):
            tmp = out / (name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, out / name)
    if raise_on_failure:
        report.raise_if_failed()
    return report
