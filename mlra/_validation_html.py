"""The validation report as HTML a reviewer can read offline.

:func:`render` writes mlra's own one-file report (inline styles, no scripts, no links out):
``reports/validation/report.html``. :func:`make_offline` rewrites the pages of the Great
Expectations Data Docs site, whose styles and scripts come from CDNs (unstyled, columns run
together without a network), to use an inline stylesheet and the images GX ships with the site.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mlra.validation import ExpectationOutcome, ValidationReport

__all__ = ["CSS", "make_offline", "render"]

CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
  margin:0 auto;padding:1.5rem 2rem;max-width:1200px;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin:1.8rem 0 .6rem}
h3,h4,h5{margin:1.2rem 0 .5rem}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem}
th,td{border:1px solid #d5d9e0;padding:.35rem .6rem;text-align:left;vertical-align:top}
th{background:#f2f4f7;font-weight:600}tr:nth-child(even) td{background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-word;margin:0}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;background:#e8eaee}
.badge.ok{background:#137333;color:#fff}.badge.bad{background:#b3261e;color:#fff}
i.fas::before{font-style:normal;font-weight:700}.fa-check-circle::before{content:"\\2714"}
.fa-times::before,.fa-times-circle::before{content:"\\2718"}
.fa-exclamation-triangle::before{content:"\\26A0"}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{color:#5f6673}dd{margin:0}
details summary{cursor:pointer;color:#1a56db}.muted{color:#5f6673}
img{max-width:100%}a{color:#1a56db}
.container,.container-fluid{max-width:1200px;margin:0 auto}
.row{display:flex;flex-wrap:wrap;gap:1rem}.col,.col-12,.col-md-8,.col-md-4{flex:1 1 20rem}
.card{border:1px solid #d5d9e0;border-radius:.4rem;padding:.6rem 1rem;margin:.6rem 0}
.alert{padding:.5rem 1rem;border-radius:.3rem;background:#f2f4f7}
.text-danger{color:#b3261e}.text-success{color:#137333}
.d-none,.modal,.navbar-toggler,.dropdown-menu,footer,#ge-cta-footer,.btn,.close,
.bootstrap-table,[id$=-body-table],[id$=-table-toolbar]{display:none!important}
.collapse:not(.show){display:block}ul{padding-left:1.2rem}
"""
CHECK_TITLES: Final = {
    "training_data": "Training data (train.parquet)",
    "split_overlap": "No leaks between splits",
    "label_balance": "Label balance",
    "drift": "Drift of the newest feedback batch",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _observed(value: Any) -> str:
    from mlra.validation import brief

    short = brief(value)
    whole = value if isinstance(value, str) else json.dumps(value, default=str, indent=1)
    nothing_more = isinstance(value, dict) and not value.get("partial_unexpected_list")
    if whole == short or len(whole) <= 80 or nothing_more:
        return f"<code>{_e(short)}</code>"
    return f"<details><summary>{_e(short)}</summary><pre>{_e(whole)}</pre></details>"


def _kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in kwargs.items())


def _check_table(outcomes: list[ExpectationOutcome]) -> str:
    rows = "".join(
        f"<tr><td class='{'ok' if o.success else 'bad'}'>{'passed' if o.success else 'FAILED'}"
        f"</td><td>{_e(o.name)}</td><td>{_observed(o.observed)}</td>"
        f"<td><code>{_e(o.expectation)}</code><br><span class='muted'>{_e(_kwargs(o.kwargs))}"
        "</span></td></tr>"
        for o in outcomes
    )
    head = "<tr><th>result</th><th>what it states</th><th>observed</th><th>expectation</th></tr>"
    return f"<table>{head}{rows}</table>"


def _drift(report: ValidationReport) -> str:
    d = report.drift
    if d is None:
        return f"<p class='muted'>Drift: {_e(report.drift_status)}</p>"
    labels = "".join(
        f"<tr><td>{_e(k)}</td><td class='num'>{d.feedback_labels.get(k, 0.0):.3f}</td>"
        f"<td class='num'>{d.reference_labels.get(k, 0.0):.3f}</td></tr>"
        for k in d.reference_labels
    )
    lengths = "".join(
        f"<tr><td>{_e(q)}</td><td class='num'>{fb:.1f}</td><td class='num'>{ref:.1f}</td></tr>"
        for q, (fb, ref) in d.length_quantiles.items()
    )
    unseen = ", ".join(d.unseen_domains) or "none"
    return (
        "<h3>Drift statistics</h3><dl>"
        f"<dt>batch</dt><dd>{_e(d.batch)} ({d.rows} rows)</dd>"
        f"<dt>label KL divergence</dt><dd>{d.label_kl:.4f}</dd>"
        f"<dt>largest text-length shift</dt><dd>{d.max_length_shift:.3f}</dd>"
        f"<dt>rows in unseen domains</dt><dd>{d.unseen_domain_share:.1%} ({_e(unseen)})</dd>"
        "</dl><div class='row'><div class='col'><table><tr><th>label</th>"
        "<th class='num'>feedback share</th><th class='num'>training share (same domains)</th>"
        f"</tr>{labels}</table></div><div class='col'><table><tr><th>text length</th>"
        f"<th class='num'>feedback</th><th class='num'>training</th></tr>{lengths}</table>"
        "</div></div>"
    )


def render(report: ValidationReport, docs_link: str | None = None) -> str:
    """One self-contained HTML page: verdict, rows, each check's expectations, drift figures."""
    verdict = "passed" if report.passed else "FAILED"
    failed = len(report.failed)
    rows = ", ".join(f"{k} {v:,}" for k, v in report.rows.items())
    sections = []
    for check, title in CHECK_TITLES.items():
        outcomes = [o for o in report.expectations if o.check == check]
        if outcomes:
            bad = sum(not o.success for o in outcomes)
            state = (
                f"<span class='bad'>{bad} failed</span>" if bad else "<span class='ok'>ok</span>"
            )
            sections.append(f"<h2>{_e(title)}: {state}</h2>{_check_table(outcomes)}")
    failures = "".join(
        f"<li><b>{_e(o.check)}</b>: {_e(o.name)} (observed {_observed(o.observed)})</li>"
        for o in report.failed
    )
    if failures:
        sections.insert(0, f"<h2 class='bad'>Failed</h2><ul>{failures}</ul>")
    docs = (
        f"<p class='muted'>Great Expectations' own Data Docs: <a href='{_e(docs_link)}'>"
        f"{_e(docs_link)}</a></p>"
        if docs_link
        else ""
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>mlra validation: {verdict}</title><style>{CSS}</style></head><body>"
        f"<h1>Validation gate <span class='badge {'ok' if report.passed else 'bad'}'>{verdict}"
        "</span></h1><dl>"
        f"<dt>expectations</dt><dd>{len(report.expectations)}, {failed} failed</dd>"
        f"<dt>prepared data</dt><dd><code>{_e(report.prepared_dir)}</code> ({_e(rows)})</dd>"
        f"<dt>drift</dt><dd>{_e(report.drift_status)}</dd>"
        f"<dt>created</dt><dd>{_e(report.created_at)} ({report.duration_s:.1f} s)</dd></dl>"
        + "".join(sections)
        + _drift(report)
        + docs
        + "</body></html>\n"
    )


# a <link> or <script> tag that loads from another host
_REMOTE_TAG: Final = re.compile(
    r"<link\b[^>]*\bhref=\"https?://[^\"]*\"[^>]*>|<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>"
    r"\s*</script>",
    re.IGNORECASE,
)
_REMOTE_LOGO: Final = re.compile(
    r"https://great-expectations-web-assets\.[^\"]*/logo-long\.png[^\"]*"
)


def _index(site: Path) -> str:
    """Plain links to every page of the site: GX's index fills its tables by script (from CDNs)."""

    def links(folder: str) -> str:
        pages = sorted((site / folder).rglob("*.html")) if (site / folder).is_dir() else []
        items = "".join(
            f"<li><a href='{_e(p.relative_to(site).as_posix())}'>{_e(p.stem)}</a> "
            f"<span class='muted'>{_e(p.relative_to(site / folder).parent.as_posix())}</span></li>"
            for p in pages
        )
        return f"<ul>{items}</ul>"

    return (
        "<section><h2>mlra's validation report</h2><p><a href='../report.html'>report.html</a>: "
        "every expectation with its observed value, and the drift figures, on one page.</p>"
        f"<h2>Validation results</h2>{links('validations')}"
        f"<h2>Expectation suites</h2>{links('expectations')}</section>"
    )


def make_offline(site: Path) -> int:
    """Rewrite every page of the Data Docs site at ``site`` to need no network: CDN styles and
    scripts out, mlra's inline stylesheet in, GX's logo from the site's own ``static/``, and
    plain links on the index page. Returns how many pages were rewritten."""
    pages = 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        depth = len(page.relative_to(site).parts) - 1
        logo = "../" * depth + "static/images/logo-long.png"
        new = _REMOTE_TAG.sub("", text)
        new = _REMOTE_LOGO.sub(logo, new)
        new = new.replace("</head>", f"<style>{CSS}</style></head>", 1)
        if depth == 0 and page.name == "index.html":
            new = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _index(site), new, count=1)
        if new != text:
            page.write_text(new, encoding="utf-8")
            pages += 1
    return pages
