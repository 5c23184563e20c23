"""Ed25519 signatures over adapter artifacts and governance records.

A manifest's sha256 proves that an artifact's files match it, but whoever can write the files can
recompute every hash too. A signature proves *who* wrote the manifest: it is made with a private
key that lives outside the repository and the registry, in a :class:`Keyring` folder (one 0600
PEM file per identity), and it is checked against public keys that the verifier trusts.

- ``sign_artifact`` writes ``signature.json`` into an artifact directory: a signature over the
  exact bytes of its ``manifest.json`` (which lists the sha256 of every other file);
  ``verify_artifact`` checks that signature and then every file hash.
- ``sign_record`` / ``verify_record`` do the same for a JSON record (an approval), over its
  canonical JSON.

Each signed message starts with a context string (artifact or record), so a signature made for
one kind of message never verifies as the other. Hashes are sha256; keys and signatures are
base64 of the raw Ed25519 bytes (32 and 64).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mlra._hashing import canonical_json, sha256_hex
from mlra.errors import ConfigError, SignatureError

__all__ = [
    "SIGNATURE_FILE",
    "Keyring",
    "Signature",
    "Signer",
    "default_keyring_path",
    "key_id",
    "sign_artifact",
    "sign_record",
    "verify",
    "verify_artifact",
    "verify_record",
]

SIGNATURE_FILE = "signature.json"
ALGORITHM = "ed25519"
ARTIFACT_CONTEXT = b"mlra artifact manifest v1\x00"  # + the bytes of manifest.json
RECORD_CONTEXT = b"mlra record v1\x00"  # + the canonical JSON of the record without "signature"
_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def default_keyring_path() -> Path:
    """``$MLRA_KEYS``, else ``$XDG_CONFIG_HOME/mlra/keys`` (default ``~/.config/mlra/keys``)."""
    if os.environ.get("MLRA_KEYS"):
        return Path(os.environ["MLRA_KEYS"]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "mlra" / "keys"


def key_id(public_key: str | bytes) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key if isinstance(public_key, bytes) else _decode(public_key, 32, "public key")
    return sha256_hex(raw)[:16]


@dataclass(frozen=True)
class Signature:
    """Who signed (``identity``), with which key, and the signature itself (base64)."""

    identity: str
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    signature: str  # base64 of the 64-byte Ed25519 signature

    def to_dict(self) -> dict[str, str]:
        return {
            "algorithm": ALGORITHM,
            "identity": self.identity,
            "key_id": self.key_id,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Signature:
        """Read a signature back; anything malformed raises ``SignatureError`` naming it."""
        if not isinstance(data, Mapping):
            raise SignatureError(f"a signature must be a JSON object, got {type(data).__name__}")
        if data.get("algorithm") != ALGORITHM:
            raise SignatureError(
                f"unsupported signature algorithm {data.get('algorithm')!r} (mlra uses {ALGORITHM})"
            )
        names = ("identity", "key_id", "public_key", "signature")
        bad = [n for n in names if not isinstance(data.get(n), str)]
        if bad:
            raise SignatureError(f"the signature's field {bad[0]!r} is missing or not a string")
        sig = cls(*(str(data[n]) for n in names))
        _check_identity(sig.identity, SignatureError)
        try:
            raw = _decode(sig.public_key, 32, "public key")
            _decode(sig.signature, 64, "signature")
        except ConfigError as exc:
            raise SignatureError(f"signature by {sig.identity!r}: {exc}") from exc
        if key_id(raw) != sig.key_id:
            raise SignatureError(
                f"signature by {sig.identity!r}: key_id {sig.key_id!r} is not the id of its "
                f"public key ({key_id(raw)})"
            )
        return sig


class Signer:
    """One identity's private key; ``Keyring.signer`` makes these."""

    def __init__(self, identity: str, key: Ed25519PrivateKey, path: Path, created: bool) -> None:
        self.identity = identity
        self.path = path  # the private key's PEM file
        self.created = created  # True if this call generated the key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = base64.b64encode(raw).decode()
        self.key_id = key_id(raw)
        self._key = key

    def __repr__(self) -> str:
        return f"Signer({self.identity!r}, key_id={self.key_id!r}, path={str(self.path)!r})"

    def sign(self, payload: bytes) -> Signature:
        """Sign ``payload`` (the exact bytes) with this identity's key."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise ConfigError(f"sign() takes bytes, got {type(payload).__name__}")
        signature = base64.b64encode(self._key.sign(bytes(payload))).decode()
        return Signature(self.identity, self.key_id, self.public_key, signature)


class Keyring:
    """A folder of keys, outside the repository: ``<identity>.pem`` (private, mode 0600) and
    ``<identity>.pub`` (the base64 public key, to hand to verifiers). A keyring may also hold
    only ``.pub`` files: the public keys a verifier trusts."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_keyring_path()

    def __repr__(self) -> str:
        return f"Keyring({str(self.path)!r})"

    def signer(self, identity: str, create: bool = True) -> Signer:
        """The signer of ``identity``; with ``create``, its key is generated on first use (and
        where it was written is said once, on stderr, and by ``Signer.created``)."""
        _check_identity(identity, ConfigError)
        pem = self.path / f"{identity}.pem"
        created = False
        if not pem.exists():
            if not create:
                raise ConfigError(
                    f"no private key for {identity!r} in the keyring {self.path} (no {pem.name}); "
                    "create one with Keyring.signer(identity) or set MLRA_KEYS to the keyring"
                )
            created = self._generate(identity, pem)
        try:
            key = serialization.load_pem_private_key(_read_private(pem), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{pem} is not an unencrypted PEM private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{pem} holds a {type(key).__name__}, not an Ed25519 private key")
        signer = Signer(identity, key, pem, created)
        pub = self.path / f"{identity}.pub"
        if created or not pub.exists():
            _write_replace(pub, (signer.public_key + "\n").encode(), 0o644)
        elif (found := self.public_key(identity)) != signer.public_key:
            raise ConfigError(
                f"{pub} (key {key_id(found)}) does not belong to {pem.name} (key "
                f"{signer.key_id}); delete {pub} and it is written again from the private key"
            )
        if created:
            print(
                f"mlra: created signing key {identity!r} (key id {signer.key_id}) at {pem}; "
                f"its public key, for whoever verifies: {signer.public_key}",
                file=sys.stderr,
            )
        return signer

    def public_key(self, identity: str) -> str:
        """The base64 public key of ``identity``: from its ``.pub`` file, else its private key."""
        _check_identity(identity, ConfigError)
        pub = self.path / f"{identity}.pub"
        if pub.is_file():
            text = pub.read_text(encoding="ascii", errors="replace").strip()
            _decode(text, 32, f"public key in {pub}")
            return text
        if (self.path / f"{identity}.pem").exists():
            return self.signer(identity, create=False).public_key
        raise ConfigError(f"the keyring {self.path} has no key for {identity!r}")

    def identities(self) -> list[str]:
        """Every identity with a private or public key here, sorted."""
        if not self.path.is_dir():
            return []
        names = {p.stem for p in self.path.iterdir() if p.suffix in (".pem", ".pub")}
        return sorted(n for n in names if _IDENTITY.fullmatch(n))

    def trusted(self, identities: Iterable[str] | None = None) -> dict[str, str]:
        """identity -> public key, for ``verify``: the named identities, or all of them here."""
        names = self.identities() if identities is None else list(identities)
        return {name: self.public_key(name) for name in names}

    def _generate(self, identity: str, pem: Path) -> bool:
        """Write a new key to ``pem`` unless another process just did; True if this one did."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        blob = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = self.path / f".{identity}.{uuid.uuid4().hex[:8]}.tmp"
        _write_new(tmp, blob, 0o600)
        try:
            os.link(tmp, pem)  # atomic, and never replaces a key that exists
            return True
        except FileExistsError:
            return False  # a concurrent first use won: use its key
        finally:
            tmp.unlink()


def verify(
    payload: bytes,
    signature: Signature | Mapping[str, Any],
    trusted: Mapping[str, str],
    *,
    identity: str | None = None,
) -> Signature:
    """Check that ``signature`` is a valid signature of ``payload`` by a trusted key.

    ``trusted`` maps identity -> base64 public key. ``identity``, if given, is the one identity
    that may have signed. Raises ``SignatureError`` naming the signer, key id and reason.
    """
    sig = Signature.from_dict(
        signature.to_dict() if isinstance(signature, Signature) else signature
    )
    who = f"{sig.identity!r} (key {sig.key_id})"
    if identity is not None and sig.identity != identity:
        raise SignatureError(f"signed by {who}, but only {identity!r} may sign this")
    if sig.identity not in trusted:
        known = ", ".join(sorted(trusted)) or "none"
        raise SignatureError(f"unknown signer {who}: not a trusted identity (trusted: {known})")
    want = _decode(trusted[sig.identity], 32, f"the trusted public key of {sig.identity!r}")
    if key_id(want) != sig.key_id:
        raise SignatureError(
            f"key {sig.key_id} is not trusted for {sig.identity!r} (its trusted key is "
            f"{key_id(want)}): signed with another key under that name"
        )
    try:
        Ed25519PublicKey.from_public_bytes(want).verify(
            base64.b64decode(sig.signature), bytes(payload)
        )
    except InvalidSignature as exc:
        raise SignatureError(
            f"bad signature by {who}: the signed content was changed after signing"
        ) from exc
    return sig


def sign_artifact(path: str | os.PathLike[str], signer: Signer) -> Signature:
    """Sign the artifact at ``path`` (its intact manifest.json) and write ``signature.json``."""
    from mlra.artifact import MANIFEST_FILE, MAX_JSON_BYTES, _read_file, _read_verified

    path = Path(path)
    blob = _read_file(path, MANIFEST_FILE, limit=MAX_JSON_BYTES)
    manifest, _ = _read_verified(path, blob)  # an artifact that does not verify is not signed
    sig = signer.sign(ARTIFACT_CONTEXT + blob)
    record = {"signed_file": MANIFEST_FILE, "manifest_sha256": manifest.sha256, **sig.to_dict()}
    _write_replace(path / SIGNATURE_FILE, _json(record), 0o644)
    return sig


def verify_artifact(
    path: str | os.PathLike[str], trusted: Mapping[str, str], *, identity: str | None = None
) -> Signature:
    """Check the artifact at ``path``: its signature over manifest.json by a trusted key, then
    every file against the signed manifest's sha256. Returns the signature."""
    from mlra.artifact import MANIFEST_FILE, MAX_JSON_BYTES, _read_file, _read_verified, read_json

    path = Path(path)
    if not os.path.lexists(path / SIGNATURE_FILE):
        _read_file(path, MANIFEST_FILE)  # (no directory, no manifest: say that instead)
        raise SignatureError(
            f"{path} is unsigned: it has no {SIGNATURE_FILE}; sign it with "
            "mlra.signing.sign_artifact before trusting it"
        )
    where = path / SIGNATURE_FILE
    data = read_json(_read_file(path, SIGNATURE_FILE, limit=MAX_JSON_BYTES), where)
    if not isinstance(data, dict) or data.get("signed_file") != MANIFEST_FILE:
        raise SignatureError(f"{where} is not a signature of {MANIFEST_FILE}")
    blob = _read_file(path, MANIFEST_FILE, limit=MAX_JSON_BYTES)
    try:
        sig = verify(ARTIFACT_CONTEXT + blob, data, trusted, identity=identity)
    except SignatureError as exc:
        raise SignatureError(f"{where}: {exc}") from exc
    _read_verified(path, blob)  # the very bytes that were signed list every file's sha256
    return sig


def sign_record(body: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """``body`` plus a ``"signature"`` over its canonical JSON (e.g. an approval record)."""
    if "signature" in body:
        raise ConfigError("the record already has a 'signature' field")
    try:
        payload = canonical_json(dict(body))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the record to sign is not plain JSON ({exc})") from exc
    return {**body, "signature": signer.sign(RECORD_CONTEXT + payload).to_dict()}


def verify_record(
    record: Mapping[str, Any], trusted: Mapping[str, str], *, identity: str | None = None
) -> Signature:
    """Check the ``"signature"`` of a record from ``sign_record`` (after a JSON round trip too)."""
    if not isinstance(record, Mapping) or "signature" not in record:
        raise SignatureError("the record is unsigned: it has no 'signature' field")
    body = {k: v for k, v in record.items() if k != "signature"}
    try:
        payload = canonical_json(body)
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"the signed record is not plain JSON ({exc})") from exc
    return verify(RECORD_CONTEXT + payload, record["signature"], trusted, identity=identity)


# -- helpers ----------------------------------------------------------------------------------


def _check_identity(identity: object, error: type[Exception]) -> None:
    if not isinstance(identity, str) or not _IDENTITY.fullmatch(identity):
        raise error(
            f"identity {identity!r} is not a valid name: 1-64 letters, digits and ._@+- "
            "(starting with a letter or digit)"
        )


def _decode(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ConfigError(f"{what} is not base64 ({text!r:.40})") from exc
    if len(raw) != size:
        raise ConfigError(f"{what} is {len(raw)} bytes, an Ed25519 one is {size}")
    return raw


def _read_private(pem: Path) -> bytes:
    """A private key file's bytes, if only its owner can read it (as ssh insists too)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(pem, flags)
    except OSError as exc:
        raise ConfigError(f"cannot open the private key {pem} ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the private key {pem} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise ConfigError(
                f"the private key {pem} is open to other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {pem}`"
            )
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise ConfigError(f"the private key {pem} belongs to another user (uid {info.st_uid})")
        return fh.read()


def _write_new(path: Path, blob: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())


def _write_replace(path: Path, blob: bytes, mode: int) -> None:
    """Write ``path`` atomically: a new file beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_new(tmp, blob, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json(data: Mapping[str, Any]) -> bytes:
    return canonical_json(data) + b"\n"
