"""``mlra keys``: the signing keys of this machine's keyring (approvers, the pipeline, the trail).

Keys live outside the repository, in ``$MLRA_KEYS`` (default ``~/.config/mlra/keys``); see
docs/governance.md for how approvers' public keys go into ``promotion.approvers``.
"""

from __future__ import annotations

import argparse
import json

from mlra.cli import _args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="show or create signing keys (approvals, artifacts, trail)")
    commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    show = commands.add_parser(
        "show",
        help="print a name's public key (created on first use), for promotion.approvers",
    )
    show.add_argument(
        "name", type=_args.text, help="the approver's name exactly as they pass it to --by"
    )
    show.add_argument("--json", action="store_true", help="one JSON line")
    show.set_defaults(func=_show)
    listing = commands.add_parser("list", help="every identity in the keyring")
    listing.set_defaults(func=_list)


def _show(args: argparse.Namespace) -> int:
    from mlra.governance import key_identity
    from mlra.signing import Keyring

    keyring = Keyring()
    signer = keyring.signer(key_identity(args.name))
    if args.json:
        print(json.dumps({"name": args.name, "public_key": signer.public_key,
                          "key_id": signer.key_id, "path": str(signer.path)}))  # fmt: skip
        return 0
    print(f"{args.name}: key id {signer.key_id}, private key {signer.path}")
    print("for params.yaml:")
    print("  promotion:\n    approvers:")
    print(f"      - name: {json.dumps(args.name)}\n        public_key: {signer.public_key}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from mlra.signing import Keyring

    keyring = Keyring()
    names = keyring.identities()
    print(f"keyring {keyring.path}: {len(names)} identities")
    for name in names:
        print(f"  {name}")
    return 0
