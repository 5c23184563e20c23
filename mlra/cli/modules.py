"""Modular adapters on the command line (docs/modules.md): ``mlra modules`` (each module's
standing and whether it is due) and ``mlra bundle show|record`` (what serves, now or at a date).

Everything here reads the audit trail — the record of what served — not registry aliases.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.cli import _args

if TYPE_CHECKING:
    from mlra.audit import AuditRecord
    from mlra.config import Params


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params",
        type=_args.existing_file,
        default=Path("params.yaml"),
        help="parameter file (default: params.yaml)",
    )
    common.add_argument("--json", action="store_true", help="end with one JSON line")

    p = sub.add_parser(
        "modules",
        parents=[common],
        help="each module's champion, challenger and whether its domain has enough new feedback",
    )
    p.set_defaults(func=_modules)

    p = sub.add_parser("bundle", help="what serves: the module champions and the router")
    bundle = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    show = bundle.add_parser(
        "show",
        parents=[common],
        help="the bundle serving now, or at --at (from the audit trail)",
    )
    show.add_argument(
        "--at",
        type=_when,
        default=None,
        metavar="WHEN",
        help="a date or time (ISO 8601, UTC unless it says otherwise): the bundle serving then",
    )
    show.add_argument("--history", action="store_true", help="every bundle, oldest first")
    show.set_defaults(func=_show)
    record = bundle.add_parser(
        "record",
        parents=[common],
        help="record the bundle of today's module champions (after a promotion or rollback "
        "outside `mlra run`; `mlra promote/rollback --module` record it themselves)",
    )
    record.add_argument("--by", type=_args.text, required=True, help="your name, as recorded")
    record.add_argument("--reason", type=_args.text, required=True, help="why, as recorded")
    record.set_defaults(func=_record)


def _when(value: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--at must be an ISO 8601 date or time (e.g. 2026-12-01 or 2026-12-01T09:30), "
            f"got {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if len(value) <= len("2026-12-01"):  # a date: the bundle serving at its end
        when = when + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return when


def _load(args: argparse.Namespace) -> tuple[Params, list[AuditRecord]]:
    from mlra.audit import default_trail
    from mlra.config import load_params
    from mlra.errors import IntegrityError

    params = load_params(args.params)
    trail = default_trail()
    if not trail.exists():
        return params, []
    check = trail.verify()
    if not check.intact:
        raise IntegrityError(f"{trail.location}: {check}; see `mlra audit verify`")
    return params, trail.records()


def module_rows(params: Params, records: list[AuditRecord]) -> list[dict[str, Any]]:
    """One row per module, from the trail: model, champion, challenger, versions, and what
    awaits a person."""
    from mlra.governance import replay
    from mlra.modules import model_name
    from mlra.promotion import awaiting_approval_in

    rows = []
    for module in params.modules.names(params.data):
        state = replay(records, model_name(params, module))
        rows.append(
            {
                "module": module,
                "model": state.model,
                "champion": state.champion,
                "challenger": state.challenger,
                "versions": len(state.versions),
                "awaiting_approval": awaiting_approval_in(state),
            }
        )
    return rows


def status_lines(params: Params, records: list[AuditRecord]) -> list[tuple[str, str]]:
    """What ``mlra status`` adds in modular mode: each module's standing and the bundle."""
    from mlra.governance import version_label
    from mlra.modules import bundle_at

    out: list[tuple[str, str]] = [("modules", f"{params.modules.mode} mode")]
    for row in module_rows(params, records):
        waiting = ", ".join(f"v{v}" for v in row["awaiting_approval"])
        count = row["versions"]
        out.append(
            (
                f"  {row['module']}",
                f"champion {version_label(row['champion'])}, challenger "
                f"{version_label(row['challenger'])}, {count} version{'' if count == 1 else 's'}"
                + (f"; awaiting approval: {waiting}" if waiting else ""),
            )
        )
    bundle = bundle_at(records, params.registry.model_name)
    out.append(("bundle", str(bundle) if bundle else "none recorded yet"))
    return out


def module_status(
    params: Params, tracking_uri: str | None
) -> tuple[list[tuple[str, str]], list[str]]:
    """``mlra status`` in modular mode: :func:`status_lines`, and every disagreement between the
    trail and each module's registry (:meth:`Registry.reconcile`) or the last bundle record."""
    from mlra.audit import default_trail
    from mlra.governance import bundle_findings
    from mlra.modules import model_name
    from mlra.registry import Registry

    trail = default_trail()
    records = trail.records() if trail.exists() and trail.verify().intact else []
    found: list[str] = []
    for module in params.modules.names(params.data):
        registry = Registry(tracking_uri, model=model_name(params, module),
                            experiment=params.registry.experiment, trail=trail,
                            read_only=True)  # fmt: skip
        if registry.exists() and any(r.subject.get("model") == registry.model for r in records):
            found += [f"{registry.model} {f}" for f in registry.reconcile()]
    found += [str(f) for f in bundle_findings(records)]
    return status_lines(params, records), found


def _modules(args: argparse.Namespace) -> int:
    from mlra.governance import version_label
    from mlra.modules import feedback_rows_by_domain, modules_due

    params, records = _load(args)
    verdicts = {v.module: v for v in modules_due(params, feedback_rows_by_domain(params))}
    rows = module_rows(params, records)
    print(f"{'module':<20} {'champion':<9} {'challenger':<11} {'versions':>8}  next retrain")
    for row in rows:
        v = verdicts[row["module"]]
        row["due"], row["why"] = v.due, v.reason
        print(
            f"{row['module']:<20} {version_label(row['champion']):<9} "
            f"{version_label(row['challenger']):<11} {row['versions']:>8}  "
            f"{'due' if v.due else 'not due'}: {v.reason}"
        )
    if args.json:
        print(json.dumps(rows, sort_keys=True))
    return 0


def _show(args: argparse.Namespace) -> int:
    from mlra.modules import bundle_at, bundle_history

    params, records = _load(args)
    name = params.registry.model_name
    chosen = bundle_history(records, name) if args.history else [bundle_at(records, name, args.at)]
    found = [b for b in chosen if b is not None]
    if not found:
        when = f" at {args.at.isoformat()}" if args.at else ""
        print(f"no bundle of {name} was serving{when} (see `mlra audit show --action bundle`)",
              file=sys.stderr)  # fmt: skip
        return 1
    for b in found:
        print(f"bundle {b.number}: recorded {b.time[:19]} by {b.actor}: {b.reason}")
        for module, entry in b.modules.items():
            version = entry.get("version")
            sha = str(entry.get("adapter_sha256") or "")[:12]
            print(f"  {module:<20} {('v' + str(version)) if version else 'base':<6} {sha}")
        router = b.router
        where = (
            f"{router['sha256'][:12]} (run {router['run_id']})"
            if router
            else "none: requests must name their domain"
        )
        print(f"  {'router':<20} {where}")
    if args.json:
        print(json.dumps([b.__dict__ for b in found], sort_keys=True, default=str))
    return 0


def _record(args: argparse.Namespace) -> int:
    from mlra.modules import record_bundle

    params, _ = _load(args)
    bundle = record_bundle(params, args.by, args.reason)
    print(f"recorded {bundle}")
    return 0
