"""``mlra audit verify`` and ``mlra audit show``."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="verify or read the tamper-evident audit trail")
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    location = argparse.ArgumentParser(add_help=False)
    location.add_argument(
        "--path",
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
    show.add_argument("--version", default=None, help="only records about this model version")
    show.add_argument("--action", default=None, help="only records of this action")
    show.set_defaults(func=_show)


def _trail(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from mlra.audit import default_trail, open_trail

    return open_trail(args.path) if args.path else default_trail()


def _verify(args: argparse.Namespace) -> int:
    trail = _trail(args)
    anchors: dict[str, int] = {}
    if not args.no_registry:
        from mlra.registry import audit_anchors

        anchors = audit_anchors(trail)
    result = trail.verify(anchors)
    print(f"{trail.location}: {result} ({len(anchors)} registry anchors checked)")
    if args.json:
        print(
            json.dumps(
                {
                    "path": trail.location,
                    "intact": result.intact,
                    "records": result.records,
                    "head": result.head,
                    "first_bad": result.first_bad,
                    "reason": result.reason,
                    "anchors": len(anchors),
                }
            )
        )
    return 0 if result.intact else 1


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

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
    table = Table(title=f"audit trail {trail.location}")
    for column in ("seq", "time (UTC)", "actor", "action", "subject", "details"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            str(r.seq),
            r.time[:19],
            r.actor,
            r.action,
            json.dumps(r.subject, ensure_ascii=False),
            json.dumps(r.details, ensure_ascii=False)[:300],
        )
    Console().print(table)
    return 0
