"""``mlra audit verify`` and ``mlra audit show``."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from mlra.audit import ACTIONS
from mlra.cli import _args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="verify or read the tamper-evident audit trail")
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    location = argparse.ArgumentParser(add_help=False)
    location.add_argument(
        "--path",
        type=_args.text,
        default=None,
        help="trail file or database URL (default: $MLRA_AUDIT, else .mlra/audit.jsonl)",
    )
    location.add_argument("--json", action="store_true", help="end with one JSON line")

    verify = commands.add_parser(
        "verify",
        parents=[location],
        help="check every record's hash and link; exit 1 naming the first bad record",
    )
    verify.add_argument(
        "--no-registry",
        action="store_true",
        help="do not check the record hashes the model registry holds (which catch a cut-off end)",
    )
    verify.set_defaults(func=_verify)

    show = commands.add_parser("show", parents=[location], help="print records, oldest first")
    show.add_argument(
        "--version",
        type=_args.version,
        default=None,
        help="only records about this model version",
    )
    show.add_argument(
        "--action",
        type=_args.choice("action", ACTIONS),
        default=None,
        help="only records of this action",
    )
    show.add_argument(
        "--full", action="store_true", help="details whole (default: long values cut, marked)"
    )
    show.set_defaults(func=_show)


def _trail(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from mlra.audit import default_trail, open_trail

    return open_trail(args.path) if args.path else default_trail()


def _verify(args: argparse.Namespace) -> int:
    """The chain, its anchors in the registry, and every disagreement between the registry's
    live state and the trail. A trail that is missing or unreadable is a failure, never
    "intact: 0 records"."""
    import sys

    trail = _trail(args)
    anchors: dict[str, int] = {}
    findings: list[Any] = []
    if not trail.exists():
        print(
            f"{trail.location}: no audit trail there (nothing recorded yet, or a mistyped "
            "--path / $MLRA_AUDIT); nothing is verified",
            file=sys.stderr,
        )
        return 1
    if not args.no_registry:
        from mlra.registry import audit_anchors, store_findings

        anchors = audit_anchors(trail)
        findings = store_findings(trail)
    try:
        result = trail.verify(anchors)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{trail.location}: cannot read the audit trail: {exc}", file=sys.stderr)
        return 1
    print(f"{trail.location}: {result} ({len(anchors)} registry anchors checked)")
    shown = {str(result.reason)}
    for f in findings:
        if f.kind == "trail" and any(r and r in str(f) for r in shown):
            continue  # the chain's own failure, already printed above
        print(f"FINDING {f}")
    if not args.no_registry and not findings and result.intact:
        print("the registry agrees with the trail: every alias, version and mlra.* tag")
    if args.json:
        print(
            json.dumps(
                {
                    "path": trail.location,
                    "intact": result.intact and not findings,
                    "records": result.records,
                    "head": result.head,
                    "first_bad": result.first_bad,
                    "reason": result.reason,
                    "anchors": len(anchors),
                    "findings": [str(f) for f in findings],
                }
            )
        )
    return 0 if result.intact and not findings else 1


def _show(args: argparse.Namespace) -> int:
    trail = _trail(args)
    records = [
        r
        for r in trail.records()
        if (args.version is None or str(r.subject.get("version")) == str(args.version))
        and (args.action is None or r.action == args.action)
    ]
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in records]))
        return 0
    from rich.console import Console

    console = Console(highlight=False)
    limit = None if getattr(args, "full", False) else CUT_AT
    table, cut = show_table(records, trail.location, limit, console.width)
    console.print(table)
    if cut:
        console.print(
            f"{cut} value(s) shortened: cut at {CUT_AT} characters (marked "
            f"{MARK.format(n='N').strip()}) or digests to 12 hex digits (marked …); --full shows "
            "them whole, --json as JSON",
            markup=False,
        )
    return 0


CUT_AT = 120  # characters of one detail value shown without --full
MARK = " …[+{n} chars]"


def _value(value: object) -> str:
    """A subject/detail value as a reader wants it: strings bare, the rest compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _cut(text: str, limit: int | None) -> tuple[str, bool]:
    if limit is None or len(text) <= limit:
        return text, False
    return text[:limit] + MARK.format(n=len(text) - limit), True


def _subject(subject: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``model v3`` for a model version (the usual subject) and the subject's other keys (they
    go with the details); a subject without a model: its first key."""
    names = [k for k in ("model", "version") if k in subject] or list(subject)[:1]
    head = [f"v{_value(subject[k])}" if k == "version" else _value(subject[k]) for k in names]
    if names and names[0] not in ("model", "version"):
        head = [f"{names[0]}: {head[0]}"]
    return " ".join(head), {k: v for k, v in subject.items() if k not in names}


def _hashes_short(text: str, limit: int | None) -> tuple[str, int]:
    """Long hex digests as their first 12 characters and a marker (``--full``: whole)."""
    if limit is None:
        return text, 0
    return _HEX.subn(lambda m: m.group(0)[:12] + "…", text)


_HEX = re.compile(r"\b[0-9a-f]{32,}\b")


def show_table(
    records: list[Any], location: str, limit: int | None, width: int = 80
) -> tuple[Any, int]:
    """The trail as a Rich table ``width`` columns wide: one row per record, one ``key: value``
    line per detail (wrapped in the last column, which gets what the others leave), each value
    cut at ``limit`` characters with an explicit marker (None: whole). Every text is literal
    (``Text``): ``[/oops]`` in a name prints as is. Returns the table and how many values were
    cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    cut = 0
    rows: list[tuple[str, ...]] = []
    for r in records:
        subject, more = _subject(r.subject)
        lines = []
        for key, value in {**more, **r.details}.items():
            text, hashes = _hashes_short(_value(value), limit)
            text, was_cut = _cut(text, limit)
            cut += was_cut + hashes
            lines.append(f"{key}: {text}")
        rows.append(
            (
                str(r.seq),
                r.time[:10] + "\n" + r.time[11:19],
                f"{r.action}\n{r.actor}",
                subject,
                "\n".join(lines),
            )
        )
    headers = ("seq", "UTC", "action\nactor", "subject", "details")
    caps = (8, 10, 18, 20)

    def natural(i: int) -> int:
        cells = [headers[i], *(row[i] for row in rows)]
        return min(caps[i], max(len(line) for c in cells for line in c.splitlines() or [""]))

    widths = [natural(i) for i in range(4)]
    rest = max(20, width - sum(widths) - 3 * (len(headers) - 1))  # 3: padding and rule
    table = Table(
        title=Text(f"audit trail {location} ({len(records)} record{'s' * (len(records) != 1)})"),
        box=box.SIMPLE_HEAD,
        show_lines=True,
        show_edge=False,
        pad_edge=False,
    )
    for header, w in zip(headers, [*widths, rest], strict=True):
        table.add_column(header, width=w, overflow="fold", justify="left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table, cut
