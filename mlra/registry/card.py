"""The model card: a version's description in the MLflow UI, rendered from the trail's state
(its projected tags and history) and its evaluation metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from mlra.audit import AuditRecord
from mlra.governance import GATES
from mlra.metrics import EvaluationMetrics

__all__ = ["DEFAULT_INTENDED_USE", "DEFAULT_LIMITATIONS", "render_card"]

DEFAULT_INTENDED_USE: Final = (
    "Classifies the sentiment (negative, neutral, positive) of short English social-media posts "
    "about the domains it was evaluated on. It assists people reviewing feedback; it is not meant "
    "for decisions about individuals, for other languages, or for domains absent from its "
    "evaluation."
)
DEFAULT_LIMITATIONS: Final = (
    "Macro-F1 on slices with few examples of a class moves with a handful of rows; read it with "
    "the support beside it.",
    "Trained on tweets: longer or more formal text is outside what it has seen.",
    "Labels are human judgements of sentiment; some domains (e.g. NFL) look labelled for stance.",
)


def _cell(value: object) -> str:
    """A value safe inside a Markdown table cell (no pipe or newline can break the table)."""
    return (
        str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def render_card(
    *,
    model: str,
    version: str,
    tags: Mapping[str, str],
    metrics: EvaluationMetrics,
    events: Sequence[AuditRecord],
    aliases: Sequence[str],
    status: str | None = None,
    intended_use: str = DEFAULT_INTENDED_USE,
    limitations: Sequence[str] = DEFAULT_LIMITATIONS,
    min_support: int = 50,
    run_link: str | None = None,
    plot_names: Sequence[str] = (),
    training_link: str | None = None,
) -> str:
    """The model card in Markdown: intended use, base model, data and its validation, metrics per
    slice against the champion (a fixed-width table: MLflow's UI draws Markdown tables without
    cell spacing), the last gate decision with its thresholds, known limitations, approvals, the
    history and the audit anchors. ``run_link``: the UI address of the run that logged it;
    ``plot_names``: its plots under ``evaluation/plots/``, linked (and the per-slice one shown)."""
    t = dict(tags)
    parent = t.get("mlra.parent_version", "none")
    against = f"champion v{parent}" if parent != "none" else "base model (no champion)"
    approvals = [e for e in events if e.action in ("approval", "rejection")]
    status = ", ".join(f"`{a}`" for a in aliases) or status or _pending_status(t)
    lines = [
        f"# {model} — version {version}",
        "",
        f"**Status:** {status} · **validation:** {t.get('mlra.validation', '?')} · "
        + (
            f"**run:** [{t.get('mlra.run_id', '?')[:12]}]({run_link}) (params, metrics, loss "
            "curves, artifacts)"
            if run_link
            else f"**registered by run** `{t.get('mlra.run_id', '?')}`"
        ),
        "",
        "## Intended use",
        "",
        intended_use,
        "",
        "## Base model",
        "",
        f"`{_cell(t.get('mlra.base_model', 'unknown'))}` with fingerprint "
        f"`{t.get('mlra.base_fingerprint', '?')}`. The adapter loads only onto a base model whose "
        "targeted weights hash to this value (`mlra.load_adapter` checks it).",
        "",
        "## Data and its validation",
        "",
        f"- data (DVC hash): `{t.get('mlra.data_hash', '?')}`",
        f"- validation gate: **{t.get('mlra.validation', '?')}** (report: run artifact "
        "`validation/`)",
        f"- params hash (data and train sections): `{t.get('mlra.params_hash', '?')}`",
        (
            f"- trained in run [{t.get('mlra.training_run_id', '')[:12]}]({training_link}) "
            "(loss and validation curves)"
            if training_link
            else f"- training run: `{t.get('mlra.training_run_id', 'none')}`"
        ),
        f"- code: `{t.get('mlra.git_commit', '?')}`",
        "",
        f"## Metrics per slice (macro-F1) against the {against}",
        "",
        "Slices in the order of the evaluation: the source domain, the target domains, then the "
        "summary rows. Δ is the candidate against the reference (the champion, else the base).",
        "",
        "```text",
        f"{'slice':<22} {'rows':>6} {'base':>7} {'champion':>9} {'candidate':>10} {'Δ':>7}",
    ]
    small, regress = [], []
    rows = [*metrics.slices.items(), ("overall", metrics.overall)]
    for name, sl in rows:
        cand = float(sl.candidate["macro_f1"])
        champ = None if sl.champion is None else float(sl.champion["macro_f1"])
        delta = cand - float(sl.reference()["macro_f1"])
        lines.append(
            f"{name[:22]:<22} {sl.support:>6} {_fmt(float(sl.base['macro_f1'])):>7} "
            f"{_fmt(champ):>9} {_fmt(cand):>10} {delta:>+7.3f}"
        )
        if name != "overall" and sl.support < min_support:
            small.append(name)
        if delta < 0:
            regress.append(f"{name} ({delta:+.3f})")
    lines.append("```")
    slice_plot = next((n for n in plot_names if n.startswith("macro_f1")), None)
    if run_link and slice_plot:
        run_id = t.get("mlra.run_id", "")
        lines += ["", f"![macro-F1 per slice](get-artifact?path=evaluation/plots/{slice_plot}"
                      f"&run_uuid={run_id})"]  # fmt: skip
    if run_link and plot_names:
        links = ", ".join(
            f"[{n.removesuffix('.png')}]({run_link}/artifacts/evaluation/plots/{n})"
            for n in plot_names
        )
        lines += ["", f"Plots: {links}."]
    gate = next((e for e in reversed(events) if e.action == "gate"), None)
    if gate is not None:
        lines += ["", f"## Gates (record {gate.seq}, {gate.time[:19]} UTC)", ""]
        checked = dict(gate.details.get("gates", {}))  # stored with sorted keys: show in order
        for gname in sorted(checked, key=lambda n: GATES.index(n) if n in GATES else len(GATES)):
            g = checked[gname]
            mark = "pass" if g.get("ok") else "**FAIL**"
            lines.append(f"- {mark} `{gname}`: {_cell(g.get('detail', ''))}")
    lines += ["", "## Known limitations", ""]
    lines += [f"- {item}" for item in limitations]
    if small:
        lines.append(f"- **Measured:** fewer than {min_support} examples in: {', '.join(small)}.")
    if regress:
        lines.append(f"- **Measured:** worse than the reference on: {', '.join(regress)}.")
    lines += ["", "## Approvals", ""]
    if approvals:
        for e in approvals:
            reason = _cell(e.details.get("reason", ""))
            lines.append(f"- {e.time[:19]} UTC · **{_cell(e.actor)}** · {e.action}: {reason}")
    else:
        lines.append("None yet.")
    body = "\n".join(lines)
    # MLflow keeps at most MAX_DESCRIPTION characters of a description (a VARCHAR on PostgreSQL):
    # the history keeps its newest rows and the lineage (also the version's tags) goes first
    lineage = [
        "",
        "## Lineage (also the version's tags)",
        "",
        *[
            f"- `{k}`: `{_cell(v)}`"
            for k, v in sorted(t.items())
            if k.startswith("mlra.")
            and not k.startswith("mlra.audit.")
            and not k.endswith("_reason")
        ],
        "",
    ]  # fmt: skip
    for keep in (len(events), 12, 6, 3):
        shown = events[-keep:] if keep else []
        history = ["", "## History (audit trail)", ""]
        if len(shown) < len(events):
            history.append(f"The newest {len(shown)} of {len(events)} records (`mlra audit show "
                           f"--version {version}` lists all).")  # fmt: skip
        history += [
            "",
            "```text",
            f"{'seq':>5}  {'time (UTC)':<19}  {'action':<16} {'actor':<20} outcome",
        ]
        history += [
            f"{e.seq:>5}  {e.time[:19]:<19}  {e.action:<16} {_plain(e.actor)[:20]:<20} "
            f"{_plain(str(e.details.get('outcome', e.details.get('reason', ''))))[:60]}"
            for e in shown
        ]
        history.append("```")
        for extra in (lineage, []):
            card = "\n".join([body, *history, *extra])
            if len(card) <= MAX_DESCRIPTION:
                return card
    cut = MAX_DESCRIPTION - len(_CUT)
    return card[:cut] + _CUT


MAX_DESCRIPTION: Final = 5000
_CUT: Final = "\n\n… (cut to the 5,000 characters MLflow keeps of a description)\n"


def _plain(value: str) -> str:
    """Text safe inside a fenced block: one line, no fence."""
    return value.replace("\n", " ").replace("\r", " ").replace("```", "'''")


def _pending_status(tags: Mapping[str, str]) -> str:
    if "mlra.rolled_back_at" in tags:
        return "rolled back (was champion)"
    if "mlra.rejected_by" in tags:
        return "rejected"
    gate = tags.get("mlra.gate")
    if gate is None:
        return "registered (gates not run yet)"
    if gate != "passed":
        return f"refused ({gate})"
    return "approved, not promoted" if "mlra.approved_by" in tags else "awaiting approval"
