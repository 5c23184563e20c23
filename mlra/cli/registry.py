"""Registry and promotion commands: ``mlra register``, ``gate``, ``approve``, ``reject``,
``promote``, ``rollback``, ``repair``, ``predict`` and ``status``.

mlflow, torch and transformers are imported inside the handlers (``mlra --help`` stays fast).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.cli import _args
from mlra.errors import ConfigError

if TYPE_CHECKING:
    from mlra.config import Params
    from mlra.promotion import PromotionParams
    from mlra.registry import Registry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params",
        type=_args.existing_file,
        default=Path("params.yaml"),
        help="parameter file (default: params.yaml)",
    )
    common.add_argument(
        "--tracking-uri",
        type=_args.text,
        default=None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else .mlra/mlruns.db)",
    )
    common.add_argument("--json", action="store_true", help="end with one JSON line")
    common.add_argument(
        "--module",
        type=_args.text,
        default=None,
        help="a module's own registered model (modules.mode modular; docs/modules.md)",
    )
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument(
        "--by",
        type=_args.text,
        default=None,
        help="who acts, as recorded (default: your user name)",
    )
    named = argparse.ArgumentParser(add_help=False)  # a decision a person answers for
    named.add_argument("--by", type=_args.text, required=True, help="your name, as recorded")

    p = sub.add_parser(
        "register",
        parents=[common, actor],
        help="log a trained adapter as an MLflow run and register it as a model version",
    )
    p.add_argument(
        "adapter", type=_args.existing_dir, help="the adapter directory (mlra.save_adapter)"
    )
    p.add_argument(
        "--metrics",
        type=_args.existing_file,
        required=True,
        help="evaluation metrics JSON (docs/governance.md)",
    )
    p.add_argument(
        "--validation", type=_args.existing_file, required=True, help="validation report.json"
    )
    p.add_argument(
        "--plot",
        type=_args.existing_file,
        action="append",
        default=[],
        help="an evaluation plot (repeatable)",
    )
    p.add_argument(
        "--dataset",
        type=_args.text,
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="a dataset used, hashed from dvc.lock (repeatable)",
    )
    p.add_argument("--gate", action="store_true", help="run the gates right after registering")
    p.set_defaults(func=_register)

    p = sub.add_parser(
        "gate",
        parents=[common, actor],
        help="check a version's promotion gates; a passing version becomes challenger",
    )
    p.add_argument("version", type=_args.version)
    p.set_defaults(func=_gate)

    for name, what in (("approve", "approve"), ("reject", "reject")):
        p = sub.add_parser(
            name, parents=[common], help=f"{what} a version for promotion to champion (recorded)"
        )
        p.add_argument("version", type=_args.version)
        p.add_argument("--by", type=_args.text, required=True, help="your name, as recorded")
        p.add_argument("--reason", type=_args.text, required=True, help="why, as recorded")
        if name == "approve":
            p.add_argument(
                "--no-promote",
                action="store_true",
                help="only record the approval (by default: a retrain paused for this version "
                "resumes and promotes it; with none paused, it is promoted here)",
            )
        p.set_defaults(func=_approve if name == "approve" else _reject)

    p = sub.add_parser(
        "promote",
        parents=[common, actor],
        help="make a version champion (gates again; an approval unless the policy is automatic)",
    )
    p.add_argument("version", type=_args.version)
    p.set_defaults(func=_promote)

    p = sub.add_parser(
        "rollback", parents=[common, named], help="move champion back to the previous champion"
    )
    p.add_argument("--reason", type=_args.text, required=True, help="why, as it will be recorded")
    p.set_defaults(func=_rollback)

    p = sub.add_parser(
        "repair",
        parents=[common, actor],
        help="put aliases and tags back where the audit trail says (recorded)",
        description="Restores what `mlra audit verify` reports as edited in the registry: the "
        "champion/challenger aliases, the trail tag and every version's mlra.* tags and card, "
        "from the verified audit trail. A version with no registration record of its own (a "
        "copy) is left for a person to delete and still reported.",
    )
    p.add_argument("--reason", type=_args.text, required=True, help="why, as it will be recorded")
    p.set_defaults(func=_repair)

    p = sub.add_parser(
        "predict",
        parents=[common],
        help="predict with a registered version (verified before use), one line per text",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--alias",
        type=_args.choice("alias", ("champion", "challenger")),
        default=None,
        help="champion (default) or challenger",
    )
    which.add_argument(
        "--version",
        dest="model_version",
        type=_args.version,
        default=None,
        help="a version number",
    )
    p.add_argument(
        "--domain",
        type=_args.text,
        default=None,
        help="modular mode: the texts' domain (its module answers); default: the router picks",
    )
    p.add_argument("texts", nargs="+", type=_args.text, metavar="TEXT")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "status", parents=[common], help="where the registry and audit trail live and stand"
    )
    p.set_defaults(func=_status)


def _registry(args: argparse.Namespace, read_only: bool = False) -> Registry:
    """The registry of params.yaml's ``registry`` section. ``read_only`` (a command that writes
    nothing: status, predict) lets an embedded store be read without importing MLflow."""
    from mlra.registry import Registry, registry_params

    settings = registry_params(args.params)
    model = settings["model_name"]
    if getattr(args, "module", None):
        from mlra.config import load_params
        from mlra.modules import model_name

        model = model_name(load_params(args.params), args.module)  # unknown module: named
    return Registry(
        args.tracking_uri, model=model, experiment=settings["experiment"], read_only=read_only
    )


def _record_bundle(args: argparse.Namespace, actor: str, reason: str) -> None:
    """After a module's champion moved: the bundle record of what serves now."""
    if not getattr(args, "module", None):
        return
    from mlra.config import load_params
    from mlra.modules import record_bundle

    bundle = record_bundle(load_params(args.params), actor, reason)
    print(f"serving now: {bundle}")


def _policy(args: argparse.Namespace) -> PromotionParams:
    from mlra.promotion import load_policy

    return load_policy(args.params)


def _actor(args: argparse.Namespace) -> str:
    if args.by is not None:
        return str(args.by)
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        raise ConfigError("cannot tell who you are: pass --by NAME") from None


def _emit(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str))


def _register(args: argparse.Namespace) -> int:
    from mlra.promotion import run_gates
    from mlra.registry import dataset_ref, load_params_dict

    registry = _registry(args)
    datasets = []
    for item in args.dataset:
        name, _, path = item.rpartition("=")
        datasets.append(dataset_ref(path, name or None))
    mv = registry.register(
        args.adapter,
        metrics=args.metrics,
        validation=args.validation,
        params=load_params_dict(args.params),
        datasets=datasets,
        plots=args.plot,
        actor=_actor(args),
    )
    version = str(mv.version)
    print(f"registered {registry.model} v{version} (run {mv.run_id}) in {registry.location}")
    data: dict[str, Any] = {"model": registry.model, "version": version, "run_id": mv.run_id}
    if args.gate:
        decision = run_gates(registry, version, _policy(args), _actor(args))
        print(decision)
        data["gate"] = decision.to_dict()["outcome"]
    _emit(args, data)
    return 0


def _gate(args: argparse.Namespace) -> int:
    from mlra.promotion import run_gates

    registry = _registry(args)
    decision = run_gates(registry, args.version, _policy(args), _actor(args))
    for g in decision.gates:
        print(f"  {'pass' if g.passed else 'FAIL'}  {g.name:<17} {g.detail}")
    print(decision)
    if decision.passed:
        print(f"v{decision.version} is now challenger")
    _emit(args, {"version": decision.version, **decision.to_dict()})
    return 0 if decision.passed else 1


def _answer_paused(args: argparse.Namespace, registry: Registry, approve: bool) -> bool:
    """Give the answer to a retrain paused for this version, if one waits (it then records the
    answer and, approved, promotes). True when it did."""
    from flows.approval import resume_paused_run, run_link
    from mlra.governance import version_label

    run_id = resume_paused_run(str(args.version), approve=approve, by=args.by,
                               reason=args.reason, model=registry.model, wait_s=120)  # fmt: skip
    if run_id is None:
        return False
    print(f"answered the paused retrain {run_id} ({run_link(run_id)}); it recorded the answer")
    state = registry.state()
    known = state.version(str(args.version))
    standing = known.status if known is not None else "unknown"
    print(
        f"{registry.model}: champion {version_label(state.champion)}; v{args.version}: {standing}"
    )
    return True


def _approve(args: argparse.Namespace) -> int:
    from mlra.governance import version_label
    from mlra.promotion import approve, promote

    registry = _registry(args)
    if not args.no_promote and _answer_paused(args, registry, approve=True):
        _emit(args, {"version": str(args.version), "resumed": True})
        return 0
    policy = _policy(args)
    record = approve(registry, args.version, args.by, args.reason, policy)
    print(
        f"approved v{args.version} by {args.by!r}, signed with key "
        f"{record.details['signature']['key_id']} (audit record {record.seq})"
    )
    data: dict[str, Any] = {"version": str(args.version), "seq": record.seq, "hash": record.hash}
    if not args.no_promote:
        move = promote(registry, args.version, policy, args.by)
        print(
            f"v{move.version} is champion of {registry.model} (was {version_label(move.previous)})"
        )
        _record_bundle(args, args.by, f"{args.module} v{move.version} approved: {args.reason}")
        data["champion"] = move.version
    _emit(args, data)
    return 0


def _reject(args: argparse.Namespace) -> int:
    from mlra.promotion import reject

    registry = _registry(args)
    if _answer_paused(args, registry, approve=False):
        _emit(args, {"version": str(args.version), "resumed": True})
        return 0
    record = reject(registry, args.version, args.by, args.reason)
    print(f"rejected v{args.version} by {args.by!r} (audit record {record.seq})")
    _emit(args, {"version": str(args.version), "seq": record.seq, "hash": record.hash})
    return 0


def _promote(args: argparse.Namespace) -> int:
    from mlra.promotion import promote

    registry = _registry(args)
    move = promote(registry, args.version, _policy(args), _actor(args))
    previous = f"v{move.previous}" if move.previous else "none"
    print(
        f"v{move.version} is champion of {registry.model} (was {previous}; approved by "
        f"{move.approver!r}; audit record {move.record.seq})"
    )
    _record_bundle(args, _actor(args), f"{args.module} v{move.version} promoted")
    _emit(args, {"champion": move.version, "previous": move.previous, "seq": move.record.seq})
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from mlra.promotion import rollback

    registry = _registry(args)
    move = rollback(registry, _actor(args), args.reason)
    print(
        f"rolled back {registry.model}: champion is v{move.version} again (was v{move.previous};"
        f" audit record {move.record.seq})"
    )
    _record_bundle(args, _actor(args), f"{args.module} rolled back: {args.reason}")
    _emit(args, {"champion": move.version, "previous": move.previous, "seq": move.record.seq})
    return 0


def _repair(args: argparse.Namespace) -> int:
    from mlra.promotion import repair

    registry = _registry(args)
    before = registry.reconcile()
    if not before:
        print(f"{registry.model}: the registry agrees with the audit trail; nothing to repair")
        _emit(args, {"repaired": [], "remaining": []})
        return 0
    remaining = repair(registry, _actor(args), args.reason)
    for f in before:
        print(f"  {'left ' if f in remaining else 'fixed'}  {f}")
    print(
        f"repaired {len(before) - len(remaining)} of {len(before)} findings (recorded in "
        f"{registry.trail_location})"
    )
    _emit(args, {"repaired": [str(f) for f in before if f not in remaining],
                 "remaining": [str(f) for f in remaining]})  # fmt: skip
    return 0 if not remaining else 1


def _modular(args: argparse.Namespace) -> Params | None:
    """params.yaml when it is in modular mode and no ``--module`` was named, else None."""
    from mlra.config import load_params

    params = load_params(args.params)
    return params if params.modules.mode == "modular" and not args.module else None


def _predict_bundle(args: argparse.Namespace, params: Params) -> int:
    """The bundle that serves (by the trail, every part verified) answers each text."""
    import tempfile

    from mlra.modules import load_bundle

    with tempfile.TemporaryDirectory(prefix="mlra-predict-") as tmp:
        bundle, record = load_bundle(params, tmp)
    print(f"{record}: every module and the router verified against the audit trail",
          file=sys.stderr)  # fmt: skip
    answer = bundle.predict(args.texts, [args.domain] * len(args.texts))
    versions = record.versions()
    rows = answer.rows()
    for text, row in zip(args.texts, rows, strict=True):
        module = row["module"]
        served = f"{module} v{versions.get(module)}" if module else "base"
        print(f"{row['label']}\t{served} ({row['how']})\t{text}")
    _emit(args, {"bundle": record.number, "predictions": rows})
    return 0


def _predict(args: argparse.Namespace) -> int:
    import tempfile

    from mlra.classifier import predict
    from mlra.data import LABELS

    params = _modular(args) if args.model_version is None and args.alias is None else None
    if params is not None:
        return _predict_bundle(args, params)
    if args.domain is not None:
        raise ConfigError("--domain routes a modular bundle; with --module, --version or "
                          "--alias one model answers every text")  # fmt: skip
    registry = _registry(args, read_only=True)
    version = registry.resolve(args.alias, args.model_version)
    with tempfile.TemporaryDirectory(prefix="mlra-predict-") as tmp:
        model, tokenizer, fetched = registry.load_model(version, tmp)
    print(
        f"{registry.model} v{version}"
        + (f" ({args.alias or 'champion'})" if args.model_version is None else "")
        + f": sha256 {fetched.manifest.sha256[:12]}…, base fingerprint "
        f"{fetched.manifest.base_fingerprint[:12]}… and signature verified against its "
        "registration record in the audit trail",
        file=sys.stderr,
    )
    labels = [LABELS[i] for i in predict(model, tokenizer, args.texts).tolist()]
    for text, label in zip(args.texts, labels, strict=True):
        print(f"{label}\t{text}")
    _emit(
        args,
        {
            "model": registry.model,
            "version": version,
            "predictions": [
                {"text": t, "label": x} for t, x in zip(args.texts, labels, strict=True)
            ],
        },
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from mlra.governance import version_label
    from mlra.promotion import status

    info = status(_registry(args, read_only=True))
    audit = info["audit"]
    params = _modular(args)
    if params is not None:  # each module's registry reconciled too, and the bundle
        from mlra.cli.modules import module_status

        info["modules"], found = module_status(params, args.tracking_uri)
        audit["findings"] += found
        audit["intact"] = audit["intact"] and not found
    last = info["last_run"]
    rows = [
        (
            "tracking URI",
            info["tracking_uri"] + ("" if info["registry_exists"] else " (not created yet)"),
        ),
        ("experiment", info["experiment"]),
        ("registered model", f"{info['model']} ({info['versions']} versions)"),
        ("champion", version_label(info["champion"])),
        ("challenger", version_label(info["challenger"])),
        ("awaiting approval", ", ".join(f"v{v}" for v in info["awaiting_approval"]) or "none"),
        *[(f"  v{v}", standing) for v, standing in info["standing"].items()],
        *(info.get("modules") or []),
        ("last run", f"{last['run_id']} {last['status']} {last['started']}" if last else "none"),
        (
            "audit trail",
            f"{audit['path']}: "
            + (
                (
                    f"intact, {audit['records']} records; the registry agrees with it"
                    if audit["exists"]
                    else "not created yet (nothing recorded)"
                )
                if audit["intact"]
                else f"{len(audit['findings'])} disagreements with the registry (below)"
            ),
        ),
        (
            "registry lock",
            info["lock"]["path"] + ("" if info["lock"]["shared"] else " (this machine only)"),
        ),
    ]
    for key, value in rows:
        print(f"{key + ':':<19} {value}")
    for finding in audit["findings"]:
        print(f"  FINDING  {finding}")
    _emit(args, info)
    return 0 if audit["intact"] else 1
