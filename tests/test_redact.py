"""Secrets never print: redaction of values and text, log records, and the real ``mlra`` command
pointed at a tracking URI with a password where nothing listens."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlra.redact import install, redact, redact_text

PASSWORD = "pw-s3cret-42"

# (text, what it must become)
CASES: list[tuple[str, str]] = [
    ("http://alice:pw-x@host:5000/", "http://alice:***@host:5000/"),
    ("https://:tok-x@h.example/api", "https://:***@h.example/api"),
    ("https://ghp_tok0x@github.com/org/repo", "https://***@github.com/org/repo"),
    ("postgresql://u:p@ss@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
    ("uri='postgresql+psycopg2://ml:pw@db/m' x", "uri='postgresql+psycopg2://ml:***@db/m' x"),
    ("GET https://h/x?token=abc&sig=def&page=2 ok", "GET https://h/x?token=***&sig=***&page=2 ok"),
    ("s3://b/k?X-Amz-Signature=ab12&X-Amz-Credential=AK/2026",
     "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("Authorization: Bearer xyz.abc", "Authorization: Bearer ***"),
    ('headers {"Authorization": "Bearer xyz abc"}', 'headers {"Authorization": "***"}'),
    ("retrying with Bearer eyJhbGciOi.x-y_z now", "retrying with Bearer *** now"),
    ("{'password': 'hunter 2', 'passed': True}", "{'password': '***', 'passed': True}"),
    ("MLFLOW_TRACKING_PASSWORD=abc123 next", "MLFLOW_TRACKING_PASSWORD=*** next"),
    ("private_key: AAAAB3Nza", "private_key: ***"),
    ("client-secret=k1,other=2", "client-secret=***,other=2"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
     "-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----"),
]  # fmt: skip
# Text that looks close to a secret but is none: it stays as it is.
KEPT = [
    "postgresql://mlra@db:5432/audit",  # a user name without a password is no secret
    "ssh://git@github.com/org/repo",
    "sqlite:////tmp/a@b/mlruns.db",
    "mail ops@example.com about https://h/x?page=2&sort=asc",
    "passed: 3, bypass=1, author: Ann, tokenizer: bert",
    "Basic usage: mlra status",
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:30] for c in CASES])
def test_redact_text_hides_each_kind_of_secret(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # idempotent


@pytest.mark.parametrize("text", KEPT)
def test_redact_text_keeps_what_is_no_secret(text: str) -> None:
    assert redact_text(text) == text


def test_redact_values_by_key_recursively() -> None:
    value = {
        "private_key": "k",
        "Bearer": "b",
        "db_passwd": "x",
        "tokenizer": "bert",
        "nested": [{"uri": "https://tok@h", "note": "Authorization: Bearer zz"}, 3],
    }
    assert redact(value) == {
        "private_key": "***",
        "Bearer": "***",
        "db_passwd": "***",
        "tokenizer": "bert",
        "nested": [{"uri": "https://***@h", "note": "Authorization: Bearer ***"}, 3],
    }
    from mlra.audit import redact as audit_redact

    assert audit_redact is redact  # one implementation, imported where it was


def test_log_records_and_their_tracebacks_are_redacted() -> None:
    install()
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("mlra.test.redact")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("cannot reach %s", f"http://alice:{PASSWORD}@h/")
        try:
            raise ConnectionError(f"refused: https://u:{PASSWORD}@h/?token={PASSWORD}")
        except ConnectionError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "http://alice:***@h/" in text and "Traceback" in text and "ConnectionError" in text
    assert PASSWORD not in text


def test_records_keep_their_arguments_when_they_hold_no_secret() -> None:
    install()
    logger = logging.getLogger("mlra.test.args")
    plain = logger.makeRecord(logger.name, logging.INFO, "f", 1, "%s %s", ("GET", "/x"), None)
    assert plain.args == ("GET", "/x")  # untouched: formatters that read args still work
    secret = logger.makeRecord(
        logger.name, logging.INFO, "f", 1, "%s %s", ("GET", f"/x?token={PASSWORD}"), None
    )
    assert secret.args == ("GET", "/x?token=***") and secret.getMessage() == "GET /x?token=***"


def test_warnings_and_uncaught_tracebacks_are_redacted() -> None:
    code = (
        "import warnings\n"
        "from mlra.redact import install\n"
        "install()\n"
        f"warnings.warn('retrying https://bob:{PASSWORD}@h/')\n"
        f"raise RuntimeError('cannot open sqlite+pysqlcipher://:{PASSWORD}@/x.db')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "UserWarning: retrying https://bob:***@h/" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr and "RuntimeError" in done.stderr
    assert "sqlite+pysqlcipher://:***@/x.db" in done.stderr and PASSWORD not in done.stderr


# ------------------------------------------------------------------ the real command, in-process


@pytest.fixture
def dead_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """An MLflow tracking URI with a password, on a local port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{port}/"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail now, not after 4 minutes
    monkeypatch.setenv("MLRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLRA_AUDIT", str(tmp_path / "home" / "audit.jsonl"))
    return uri


COMMANDS = [
    ["status"],
    ["gate", "1", "--by", "ann"],
    ["approve", "1", "--by", "ann", "--reason", "looks good"],
    ["promote", "1", "--by", "ann"],
    ["rollback", "--by", "ann", "--reason", "bad"],
    ["predict", "--version", "1", "hello"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_unreachable_tracking_server_is_one_redacted_line(
    dead_uri: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from mlra.cli import main

    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"mlra {argv[0]}: error: cannot reach http://alice:***@127.0.0.1:")
    assert "Connection refused" in line and "MLFLOW_TRACKING_URI" in line


def test_tracking_uri_option_is_redacted_too(
    dead_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlra.cli import main

    uri = dead_uri.replace("alice:", ":")  # a token as the password, no user
    assert main(["status", "--tracking-uri", uri]) == 1
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err and "cannot reach http://:***@127.0.0.1:" in err


def test_unreachable_database_names_the_url_redacted(
    dead_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlra.cli import main

    port = dead_uri.rsplit(":", 1)[1].strip("/")
    url = f"postgresql+psycopg2://bob:{PASSWORD}@127.0.0.1:{port}/audit"
    assert main(["audit", "verify", "--no-registry", "--path", url]) == 1
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    (line,) = err.strip().splitlines()
    assert f"cannot reach audit trail postgresql+psycopg2://bob:***@127.0.0.1:{port}/audit" in line
    assert "Connection refused" in line


def test_errors_and_unexpected_bugs_print_redacted(
    dead_uri: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlra.cli.registry as registry_cli
    from mlra.cli import main
    from mlra.errors import ConfigError

    def user_error(args: Any) -> int:
        raise ConfigError(f"bad store {dead_uri}?token={PASSWORD}")

    monkeypatch.setattr(registry_cli, "_status", user_error)
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mlra status: error: bad store http://alice:***@" in err
    assert PASSWORD not in err

    def bug(args: Any) -> int:
        raise KeyError(f"oops {dead_uri}")

    monkeypatch.setattr(registry_cli, "_status", bug)
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error" in err and "Traceback (most recent call last)" in err
    assert "in bug" in err and "KeyError" in err and PASSWORD not in err


def test_real_subprocess_never_prints_the_password(dead_uri: str) -> None:
    env = dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-m", "mlra.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],  # the project: its params.yaml
    )
    assert done.returncode == 1, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("mlra status: error: cannot reach")
