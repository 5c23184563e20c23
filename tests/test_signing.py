"""Ed25519 signatures: keyrings, raw payloads, signed artifacts and signed records.

The attacker of these tests can write the artifact (e.g. MLflow's artifact store): change the
weights and recompute every hash the manifest holds. Only a key they do not have stops them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch

import mlra
from mlra import AdapterSpec
from mlra._hashing import canonical_json, sha256_hex
from mlra.artifact import MANIFEST_FILE, WEIGHTS_FILE
from mlra.errors import ConfigError, IntegrityError, SignatureError
from mlra.signing import (
    SIGNATURE_FILE,
    Keyring,
    Signature,
    default_keyring_path,
    key_id,
    sign_artifact,
    sign_record,
    verify,
    verify_artifact,
    verify_record,
)
from tests.conftest import make_tiny_bert

SPEC = AdapterSpec(rank=4, alpha=8, targets=["query", "value"])


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return Keyring(tmp_path / "keys")


def _out(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        ids = torch.arange(20).reshape(2, 10) % 64
        return model(input_ids=ids).last_hidden_state  # type: ignore[no-any-return]


def _saved(path: Path) -> torch.nn.Module:
    model = make_tiny_bert(0)
    mlra.add_adapter(model, "airline", SPEC)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    mlra.save_adapter(model, "airline", path, metadata={"run": "r1"})
    return model


def _rewrite_weights_and_every_hash(path: Path) -> None:
    """What someone with write access to the artifact store can do without any key."""
    weights = bytearray((path / WEIGHTS_FILE).read_bytes())
    weights[-3] ^= 0x01
    (path / WEIGHTS_FILE).write_bytes(bytes(weights))
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"][WEIGHTS_FILE] = hashlib.sha256(weights).hexdigest()
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    manifest["manifest_sha256"] = sha256_hex(canonical_json(body))
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


# -- keyring --------------------------------------------------------------------------------


def test_a_key_is_created_on_first_use_with_private_permissions(
    keyring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = keyring.signer("pipeline")
    assert signer.created and signer.path == keyring.path / "pipeline.pem"
    err = capsys.readouterr().err
    assert str(signer.path) in err and signer.key_id in err and signer.public_key in err
    assert stat.S_IMODE(os.stat(signer.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keyring.path).st_mode) & 0o077 == 0
    assert b"PRIVATE KEY" in signer.path.read_bytes()
    assert (keyring.path / "pipeline.pub").read_text().strip() == signer.public_key
    again = keyring.signer("pipeline")  # the same key, and nothing said the second time
    assert not again.created and again.key_id == signer.key_id
    assert capsys.readouterr().err == ""
    assert keyring.public_key("pipeline") == signer.public_key
    assert signer.key_id == key_id(signer.public_key) and len(signer.key_id) == 16
    assert keyring.identities() == ["pipeline"]
    assert keyring.trusted() == {"pipeline": signer.public_key}


def test_a_concurrent_first_use_keeps_the_key_that_was_written_first(keyring: Keyring) -> None:
    first = keyring.signer("pipeline")
    assert keyring._generate("pipeline", first.path) is False  # the other process lost the race
    assert keyring.signer("pipeline").key_id == first.key_id
    assert sorted(p.name for p in keyring.path.iterdir()) == ["pipeline.pem", "pipeline.pub"]


def test_a_verifier_keyring_holds_public_keys_only(tmp_path: Path) -> None:
    signer = Keyring(tmp_path / "pipeline").signer("pipeline")
    verifier = Keyring(tmp_path / "verifier")
    verifier.path.mkdir()
    (verifier.path / "pipeline.pub").write_text(signer.public_key + "\n")
    assert verifier.trusted() == {"pipeline": signer.public_key}
    verify(b"x", signer.sign(b"x"), verifier.trusted())
    with pytest.raises(ConfigError, match="no private key for 'pipeline'"):
        verifier.signer("pipeline", create=False)


def test_without_create_a_missing_key_is_an_error(keyring: Keyring) -> None:
    with pytest.raises(ConfigError, match="no private key for 'alice'"):
        keyring.signer("alice", create=False)
    with pytest.raises(ConfigError, match="no key for 'alice'"):
        keyring.public_key("alice")
    assert not keyring.path.exists()


@pytest.mark.parametrize("identity", ["", "../etc", ".hidden", "a/b", "x" * 65, "sp ace"])
def test_identities_must_be_plain_names(keyring: Keyring, identity: str) -> None:
    with pytest.raises(ConfigError, match="not a valid name"):
        keyring.signer(identity)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_private_key_readable_by_others_is_refused(keyring: Keyring) -> None:
    signer = keyring.signer("pipeline")
    os.chmod(signer.path, 0o644)
    with pytest.raises(ConfigError, match=r"open to other users \(mode 0644\).*chmod 600"):
        keyring.signer("pipeline")
    os.chmod(signer.path, 0o600)
    assert keyring.signer("pipeline").key_id == signer.key_id


def test_a_public_key_file_that_does_not_match_is_refused(tmp_path: Path) -> None:
    mine, other = Keyring(tmp_path / "mine"), Keyring(tmp_path / "other")
    mine.signer("pipeline")
    (mine.path / "pipeline.pub").write_text(other.signer("pipeline").public_key)
    with pytest.raises(ConfigError, match=r"pipeline\.pub .* does not belong to pipeline\.pem"):
        mine.signer("pipeline")


def test_the_default_keyring_is_outside_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLRA_KEYS", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert default_keyring_path() == Path.home() / ".config" / "mlra" / "keys"
    monkeypatch.setenv("MLRA_KEYS", str(tmp_path / "k"))
    assert Keyring().path == tmp_path / "k"


# -- raw payloads ---------------------------------------------------------------------------


def test_sign_and_verify_bytes(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keys")
    signer = keyring.signer("alice")
    sig = signer.sign(b"payload")
    trusted = keyring.trusted(["alice"])
    back = Signature.from_dict(json.loads(json.dumps(sig.to_dict())))
    assert back == sig and verify(b"payload", back, trusted) == sig
    assert verify(b"payload", sig.to_dict(), trusted, identity="alice") == sig
    with pytest.raises(SignatureError, match=r"bad signature by 'alice' \(key [0-9a-f]{16}\)"):
        verify(b"payloaD", sig, trusted)
    with pytest.raises(SignatureError, match="only 'bob' may sign this"):
        verify(b"payload", sig, trusted, identity="bob")


def test_unknown_signers_and_untrusted_keys_are_named(tmp_path: Path) -> None:
    ours, theirs = Keyring(tmp_path / "ours"), Keyring(tmp_path / "theirs")
    trusted = {name: ours.signer(name).public_key for name in ("pipeline", "alice")}
    mallory = theirs.signer("mallory").sign(b"x")
    with pytest.raises(SignatureError, match=r"unknown signer 'mallory'.*trusted: alice, pipeline"):
        verify(b"x", mallory, trusted)
    fake = theirs.signer("pipeline")  # the same name, another key
    with pytest.raises(SignatureError, match=rf"key {fake.key_id} is not trusted for 'pipeline'"):
        verify(b"x", fake.sign(b"x"), trusted)
    with pytest.raises(SignatureError, match="unknown signer"):
        verify(b"x", ours.signer("pipeline").sign(b"x"), {})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("algorithm", "rsa", "unsupported signature algorithm 'rsa'"),
        ("signature", "not base64!", "signature is not base64"),
        ("public_key", "AAAA", "public key is 3 bytes"),
        ("key_id", "0" * 16, "is not the id of its public key"),
        ("identity", 7, "'identity' is missing or not a string"),
    ],
)
def test_malformed_signatures_are_refused(
    keyring: Keyring, field: str, value: object, message: str
) -> None:
    signer = keyring.signer("alice")
    data: dict[str, object] = {**signer.sign(b"x").to_dict(), field: value}
    with pytest.raises(SignatureError, match=message):
        verify(b"x", data, keyring.trusted())


# -- artifacts ------------------------------------------------------------------------------


def test_a_signed_artifact_verifies_loads_and_peft_reads_it(
    keyring: Keyring, tmp_path: Path
) -> None:
    model = _saved(tmp_path / "a")
    signer = keyring.signer("pipeline")
    sig = sign_artifact(tmp_path / "a", signer)
    record = json.loads((tmp_path / "a" / SIGNATURE_FILE).read_text())
    assert record["signed_file"] == MANIFEST_FILE and record["identity"] == "pipeline"
    assert record["manifest_sha256"] == mlra.inspect_adapter(tmp_path / "a").sha256
    assert verify_artifact(tmp_path / "a", keyring.trusted(), identity="pipeline") == sig
    fresh = make_tiny_bert(0)  # the extra file changes nothing for mlra ...
    mlra.load_adapter(fresh, tmp_path / "a")
    assert torch.equal(_out(fresh), _out(model))
    peft = pytest.importorskip("peft")  # ... nor for PEFT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.PeftModel.from_pretrained(make_tiny_bert(0), tmp_path / "a").eval()
    assert (_out(peft_model) - _out(model)).abs().max() < 1e-5


def test_weights_rewritten_with_every_hash_recomputed_fail_only_the_signature(
    keyring: Keyring, tmp_path: Path
) -> None:
    _saved(tmp_path / "a")
    sign_artifact(tmp_path / "a", keyring.signer("pipeline"))
    _rewrite_weights_and_every_hash(tmp_path / "a")
    mlra.inspect_adapter(tmp_path / "a")  # every hash agrees: integrity alone cannot tell
    with pytest.raises(SignatureError, match=r"signature\.json: bad signature by 'pipeline'"):
        verify_artifact(tmp_path / "a", keyring.trusted())


def test_an_artifact_re_signed_with_another_key_is_refused(
    keyring: Keyring, tmp_path: Path
) -> None:
    _saved(tmp_path / "a")
    trusted = {"pipeline": keyring.signer("pipeline").public_key}
    _rewrite_weights_and_every_hash(tmp_path / "a")
    attacker = Keyring(tmp_path / "attacker").signer("pipeline")
    sign_artifact(tmp_path / "a", attacker)
    with pytest.raises(SignatureError, match=f"key {attacker.key_id} is not trusted for"):
        verify_artifact(tmp_path / "a", trusted)


def test_a_file_changed_after_signing_fails_its_hash(keyring: Keyring, tmp_path: Path) -> None:
    _saved(tmp_path / "a")
    sign_artifact(tmp_path / "a", keyring.signer("pipeline"))
    weights = bytearray((tmp_path / "a" / WEIGHTS_FILE).read_bytes())
    weights[-3] ^= 0x01
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(IntegrityError, match=r"adapter_model\.safetensors .* does not match"):
        verify_artifact(tmp_path / "a", keyring.trusted())


def test_unsigned_artifacts_and_broken_signature_files_are_refused(
    keyring: Keyring, tmp_path: Path
) -> None:
    _saved(tmp_path / "a")
    with pytest.raises(SignatureError, match=r"is unsigned: it has no signature\.json"):
        verify_artifact(tmp_path / "a", keyring.trusted())
    (tmp_path / "a" / SIGNATURE_FILE).write_text("[1, NaN]")
    with pytest.raises(IntegrityError, match=r"signature\.json holds the non-standard .* NaN"):
        verify_artifact(tmp_path / "a", keyring.trusted())
    (tmp_path / "a" / SIGNATURE_FILE).write_text('{"signed_file": "adapter_config.json"}')
    with pytest.raises(SignatureError, match=r"is not a signature of manifest\.json"):
        verify_artifact(tmp_path / "a", keyring.trusted())
    with pytest.raises(ConfigError, match="no adapter directory"):
        verify_artifact(tmp_path / "missing", keyring.trusted())


def test_a_corrupt_artifact_is_not_signed(keyring: Keyring, tmp_path: Path) -> None:
    _saved(tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(IntegrityError, match="does not match"):
        sign_artifact(tmp_path / "a", keyring.signer("pipeline"))
    assert not (tmp_path / "a" / SIGNATURE_FILE).exists()


# -- records --------------------------------------------------------------------------------


def test_a_signed_record_survives_json_and_catches_edits(keyring: Keyring) -> None:
    alice = keyring.signer("alice")
    body = {"event": "approval", "version": 3, "approver": "alice", "reason": "gains", "f1": 0.5}
    record = sign_record(body, alice)
    assert {k: v for k, v in record.items() if k != "signature"} == body
    back = json.loads(json.dumps(record, indent=2, sort_keys=False))
    assert verify_record(back, keyring.trusted(), identity="alice").key_id == alice.key_id
    with pytest.raises(SignatureError, match="bad signature by 'alice'"):
        verify_record({**back, "version": 4}, keyring.trusted())
    with pytest.raises(SignatureError, match="unsigned"):
        verify_record(body, keyring.trusted())
    with pytest.raises(ConfigError, match="already has a 'signature'"):
        sign_record(record, alice)
    with pytest.raises(ConfigError, match="not plain JSON"):
        sign_record({"f1": float("nan")}, alice)


def test_an_artifact_signature_is_no_record_signature(keyring: Keyring) -> None:
    """Each signed message starts with its kind: a signature cannot be moved between kinds."""
    signer = keyring.signer("pipeline")
    body = {"event": "approval", "version": 3}
    raw = signer.sign(canonical_json(body))  # the body's bytes, but not signed as a record
    with pytest.raises(SignatureError, match="bad signature"):
        verify_record({**body, "signature": raw.to_dict()}, keyring.trusted())
