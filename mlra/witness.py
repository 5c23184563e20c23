"""Signed checkpoints of the audit trail's head, kept in a second place.

A hash chain shows that records were not edited *inside* the chain, but whoever can rewrite the
whole trail file can recompute every hash, and whoever can cut its tail leaves a valid shorter
chain. The registry anchors the hashes of the records it knows (``mlra.audit.*`` tags); the
witness is the second anchor: after every append the trail writes ``{seq, hash, time}`` of the
new head, signed with the keyring's ``mlra-trail`` key (:mod:`mlra.signing`), to an append-only
file of its own. Verification (:meth:`Witness.anchors`) checks each checkpoint's signature and
then requires every checkpointed record to be in the chain at its position: a consistent rewrite
or a truncation is caught unless the attacker also holds the private key, and a witness that was
removed while the trail has records is itself a failure.

Where it lives: ``$MLRA_AUDIT_WITNESS``, else beside the trail file (``audit.jsonl.heads``). Put
it where the trail's writers may only append (another volume, a file with ``chattr +a``) to keep
it out of reach of whoever can edit the trail file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from mlra._hashing import canonical_json

__all__ = ["WITNESS_IDENTITY", "Witness", "default_witness"]

WITNESS_IDENTITY: Final = "mlra-trail"


class Witness:
    """An append-only JSON Lines file of signed head checkpoints."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    def exists(self) -> bool:
        return self.path.is_file()

    def checkpoint(self, seq: int, digest: str, time: str) -> None:
        """Append a signed checkpoint of the head ``(seq, digest)``."""
        from mlra.signing import Keyring

        body = {"seq": seq, "hash": digest, "time": time}
        signature = Keyring().signer(WITNESS_IDENTITY).sign(canonical_json(body))
        line = json.dumps(body | {"signature": signature.to_dict()}, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def anchors(self) -> tuple[dict[str, int], str | None]:
        """``({hash: seq}, problem)``: the checkpoints whose signatures verify, or the first
        problem (an unreadable line, a bad signature, a key other than the trail's)."""
        from mlra.errors import ConfigError, IntegrityError
        from mlra.signing import Keyring, verify

        try:
            trusted = Keyring().public_key(WITNESS_IDENTITY)
        except ConfigError:
            trusted = None  # verifying on a machine without the trail's key: first key seen
        anchors: dict[str, int] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            return {}, f"the head checkpoints {self.path} cannot be read ({exc})"
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data: Any = json.loads(line)
                body = {"seq": int(data["seq"]), "hash": str(data["hash"]), "time": data["time"]}
                signature = data["signature"]
                key = trusted or str(signature["public_key"])
                trusted = key
                verify(canonical_json(body), signature, {WITNESS_IDENTITY: key})
            except (ValueError, KeyError, TypeError, IntegrityError) as exc:
                return anchors, (
                    f"head checkpoint {number} of {self.path} does not verify ({exc}): the "
                    "checkpoints were edited"
                )
            anchors[body["hash"]] = body["seq"]
        return anchors, None


def default_witness(trail_path: Path) -> Witness:
    """``$MLRA_AUDIT_WITNESS``, else ``<trail file>.heads`` beside the trail."""
    location = os.environ.get("MLRA_AUDIT_WITNESS")
    return Witness(location or trail_path.with_name(trail_path.name + ".heads"))
