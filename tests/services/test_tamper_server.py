"""The tamper catalogue of tests/test_tamper.py against the Postgres-backed MLflow server with
MLflow's own authentication on (``mlflow server --app-name basic-auth``), over HTTP.

Four accounts, made through the server's admin API: ``pipeline`` registers, gates, promotes and
repairs (it creates the experiment and each model, so MLflow makes it their MANAGE owner);
``approver`` approves, with EDIT on each model (what a team member using the UI has: set tags,
move aliases, copy versions; deleting a tag or an alias takes MANAGE); ``reviewer`` only reads
(the server's default permission, READ); ``admin`` makes the accounts and grants. Each test builds
its own small world on the one server of this module (a model with v1 champion approved by
``approver``, and for some tests v2 past the gates, awaiting approval; its own audit trail in
Postgres) and the admin deletes the model afterwards, since ``mlra audit verify`` checks every
mlra model of the store.

What it shows: the reviewer can verify but MLflow refuses its writes (403); every registry attack
of the catalogue made with an account that *may* write is caught by ``mlra audit verify`` (run as
the reviewer: exit 1, the finding named) and refused by promote / predict / ``Registry.resolve`` /
``fetch``, with the messages of tests/test_tamper.py; and a password in the tracking URI is never
printed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlra.cli import main
from mlra.errors import IntegrityError, PromotionRefused
from mlra.promotion import approve, promote, run_gates
from tests.registry_helpers import POLICY, policy, register
from tests.services.conftest import REPO, Services, _skip_or_fail

pytestmark = pytest.mark.services

ACCOUNTS = ("pipeline", "reviewer", "approver")
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def password(user: str) -> str:
    """Local-only passwords of a throwaway server (MLflow wants at least 12 characters)."""
    return f"{user}-local-only-pw"


@dataclass(frozen=True)
class AuthServer:
    url: str
    experiment: str
    pid: int
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def acting_as(user: str) -> Iterator[None]:
    """MLflow's client reads the credentials from the environment at every request."""
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password(user)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _note(log: Path, line: str) -> None:
    """The fixture's own timings, in the server's log (kept in pytest's temp folder)."""
    with log.open("a") as out:
        out.write(f"--- test fixture: {line}\n")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (the mlflow command, uvicorn and its worker); what
    is left of the group after 20 s gets SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anyone of the group still there?
        except ProcessLookupError:
            break
        proc.poll()  # reap the leader, so that it does not linger as a zombie
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _drop(services: Services, url: str) -> None:
    """Drop a database made by ``services.create_database`` (a long-lived set keeps no litter)."""
    conn = services.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """An auth-enabled MLflow server on its own Postgres databases (store and user DB), with
    the accounts made; stopped at the end of the module."""
    if importlib.util.find_spec("flask_wtf") is None:
        _skip_or_fail(
            "Flask-WTF is not installed (MLflow's `auth` extra, which `mlflow server --app-name "
            "basic-auth` needs): pip install 'Flask-WTF<2'"
        )
    folder = tmp_path_factory.mktemp("mlflow-auth")
    databases = [services.create_database("mlflow_users"), services.create_database("mlflow_auth")]
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {databases[0]}\n"
        "admin_username = admin\n"
        f"admin_password = {password('admin')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # MLflow checks the password's PBKDF2 hash on every request, 1.4 s each on a busy
        # 2-core machine; its documented cache keeps one check per account and minute
        "auth_cache_ttl_seconds = 60\n"
    )
    config.chmod(0o600)
    url = f"http://127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,  # CSRF key of the auth app
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for key in (*CREDENTIALS, "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    log = folder / "mlflow.log"
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        databases[1],
        "--serve-artifacts",
        "--artifacts-destination",
        str(folder / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        url.rsplit(":", 1)[1],
        "--workers",
        "1",
    ]
    with log.open("ab") as out:  # O_APPEND: the notes below land after its lines
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        deadline = started + 180
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = AuthServer(url, "", proc.pid, log).tail()
                pytest.fail(f"the auth-enabled MLflow server did not start:\n{tail}", pytrace=False)
            time.sleep(0.3)
        from mlflow.server.auth.client import AuthServiceClient

        with acting_as("admin"):
            admin = AuthServiceClient(url)
            for user in ACCOUNTS:
                admin.create_user(user, password(user))
        _note(log, f"healthy, accounts made: {time.monotonic() - started:.1f} s after start")
        yield AuthServer(url, f"mlra-tamper-{uuid.uuid4().hex[:8]}", proc.pid, log)
    finally:
        started = time.monotonic()
        _stop(proc)
        for database in databases:
            _drop(services, database)
        _note(log, f"stopped, databases dropped in {time.monotonic() - started:.1f} s")
    assert proc.returncode is not None and not _healthy(url)


@pytest.fixture
def served(
    server: AuthServer, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """One model on the auth server with v1 champion: registered and promoted by ``pipeline``,
    approved by ``approver`` (EDIT on the model, granted by the admin); its own audit trail
    (Postgres) and head checkpoints. The admin deletes the model afterwards (the next test's
    ``audit verify`` checks every mlra model of the store)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    from mlra.audit import open_trail
    from mlra.registry import Registry

    home = tmp_path / "project"
    (home / "work").mkdir(parents=True)
    trail = services.create_database("audit")
    model = f"tweets-{uuid.uuid4().hex[:8]}"
    for key, value in {
        "MLFLOW_TRACKING_URI": server.url,
        "MLRA_AUDIT": trail,
        "MLRA_AUDIT_WITNESS": str(home / "audit.heads"),
        "MLRA_HOME": str(home),
        "MLRA_KEYS": str(tmp_path / "keys"),
    }.items():
        monkeypatch.setenv(key, value)
    for key in CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    registry = Registry(
        server.url, model=model, experiment=server.experiment, trail=open_trail(trail)
    )
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["registry"] = {"model_name": model, "experiment": server.experiment}
    params["promotion"] = dict(POLICY)
    (home / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        with acting_as("pipeline"):
            register(registry, home / "work", 0.55)
            assert run_gates(registry, "1", policy()).passed
        with acting_as("admin"):
            AuthServiceClient(server.url).grant_user_permission(
                "approver", "registered_model", model, "EDIT"
            )
        with acting_as("approver"):
            approve(registry, "1", "approver", "first adapter; golden set reviewed")
        with acting_as("pipeline"):
            promote(registry, "1", policy(), "pipeline")
        with acting_as("reviewer"):
            assert registry.reconcile() == []
        yield {"home": home, "registry": registry, "params": str(home / "params.yaml")}
    finally:
        with acting_as("admin"), contextlib.suppress(MlflowException):
            MlflowClient(server.url, registry_uri=server.url).delete_registered_model(model)
        _drop(services, trail)


@pytest.fixture
def world(served: dict[str, Any]) -> dict[str, Any]:
    """``served`` plus v2, registered by ``pipeline`` and past the gates: awaiting approval."""
    registry = served["registry"]
    with acting_as("pipeline"):
        register(registry, served["home"] / "work", 0.6, 0.55, seed=2)
        assert run_gates(registry, "2", policy()).passed
    with acting_as("reviewer"):
        assert registry.reconcile() == [] and registry.alias("challenger") == "2"
    return served


def cli(capsys: pytest.CaptureFixture[str], user: str, *args: str) -> tuple[int, str]:
    """``mlra ARGS`` in-process, with ``user``'s MLflow credentials."""
    with acting_as(user):
        code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def refused_by_mlflow(action: Any) -> str:
    """Run ``action``; MLflow must refuse it with 403 (PERMISSION_DENIED). Returns the message."""
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        action()
    assert caught.value.error_code == "PERMISSION_DENIED", caught.value
    assert "403" in str(caught.value)
    return str(caught.value)


def test_the_reviewer_reads_and_verifies_but_cannot_write(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    registry = served["registry"]
    code, out = cli(capsys, "reviewer", "audit", "verify")
    assert code == 0, out
    assert "the registry agrees with the trail" in out
    code, out = cli(capsys, "reviewer", "status", "--params", served["params"])
    assert code == 0 and "FINDING" not in out, out
    with acting_as("reviewer"):
        client = registry.client
        refused_by_mlflow(
            lambda: client.set_registered_model_alias(registry.model, "champion", "1")
        )
        refused_by_mlflow(
            lambda: client.set_model_version_tag(registry.model, "1", "mlra.approved_by", "me")
        )
        refused_by_mlflow(lambda: client.delete_model_version_tag(registry.model, "1", "mlra.gate"))
        refused_by_mlflow(
            lambda: client.set_registered_model_tag(registry.model, "mlra.audit.trail", "/x")
        )
        assert registry.alias("champion") == "1" and registry.reconcile() == []
    assert cli(capsys, "reviewer", "audit", "verify")[0] == 0


def test_approval_tags_set_by_hand_approve_nothing(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    registry = world["registry"]
    with acting_as("approver"):  # EDIT on the model: MLflow lets it through
        for key, value in (
            ("mlra.approved_by", "approver"),
            ("mlra.approved_at", "2026-12-01T00:00:00+00:00"),
            ("mlra.approval_reason", "looks fine"),
        ):
            registry.client.set_model_version_tag(registry.model, "2", key, value)
    with (
        acting_as("pipeline"),
        pytest.raises(PromotionRefused, match="the registry disagrees with the audit trail"),
    ):
        promote(registry, "2", policy(), "pipeline")
    code, out = cli(capsys, "reviewer", "audit", "verify")
    assert code == 1
    assert (
        "v2 mlra.approved_by: set to 'approver' in the registry, but the trail records no such"
        in out
    )
    with acting_as("approver"):  # removing the tags again takes MANAGE: the model's owner repairs
        refused_by_mlflow(
            lambda: registry.client.delete_model_version_tag(
                registry.model, "2", "mlra.approved_by"
            )
        )
    code, out = cli(capsys, "pipeline", "repair", "--params", world["params"], "--by", "oncall",
                    "--reason", "tags set by hand")  # fmt: skip
    assert code == 0, out
    with (
        acting_as("pipeline"),
        pytest.raises(PromotionRefused, match="gate 'approval': no approval recorded"),
    ):
        promote(registry, "2", policy(), "pipeline")  # the trail decides: never approved


def test_a_champion_moved_by_a_team_member_is_refused_then_repaired(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    registry = world["registry"]
    with acting_as("approver"):
        registry.client.set_registered_model_alias(registry.model, "champion", "2")
    code, out = cli(capsys, "reviewer", "audit", "verify")
    assert code == 1
    assert "champion: points at v2, but the trail (record" in out and "says v1" in out
    code, out = cli(capsys, "reviewer", "predict", "--params", world["params"], "hello")
    assert code == 1 and "'champion' points at v2, but the audit trail says v1" in out
    with acting_as("reviewer"):
        with pytest.raises(IntegrityError, match="alias was moved outside mlra"):
            registry.resolve("champion")
        with pytest.raises(IntegrityError, match="alias was moved outside mlra"):
            registry.fetch_champion(world["home"] / "champion")  # what evaluation compares with
    code, out = cli(capsys, "pipeline", "repair", "--params", world["params"], "--by", "oncall",
                    "--reason", "champion moved by hand in the UI")  # fmt: skip
    assert code == 0, out
    with acting_as("reviewer"):
        assert registry.alias("champion") == "1"
        assert registry.resolve("champion") == "1"
    assert cli(capsys, "reviewer", "audit", "verify")[0] == 0
    repair = registry.trail.records()[-1]
    assert repair.action == "repair" and "champion: points at v2" in repair.details["findings"][0]


def test_a_copied_version_has_no_registration_of_its_own(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    registry = served["registry"]
    with acting_as("approver"):
        copy = registry.client.copy_model_version(f"models:/{registry.model}/1", registry.model)
    v = str(copy.version)
    with acting_as("reviewer"):
        assert registry.tags(v)["mlra.audit.registration"]  # the anchor came along
    code, out = cli(capsys, "reviewer", "audit", "verify")
    assert code == 1
    assert f"v{v}: has no registration record of its own; its registration anchor is record" in out
    with (
        acting_as("approver"),
        pytest.raises(PromotionRefused, match=f"v{v}: has no registration record of its own"),
    ):
        approve(registry, v, "approver", "a copy of v1")
    with acting_as("reviewer"), pytest.raises(IntegrityError, match="has no registration record"):
        registry.fetch(v, served["home"] / "fetched")
    code, out = cli(
        capsys, "reviewer", "predict", "--params", served["params"], "--version", v, "hi"
    )
    assert code == 1 and f"version {v} of {registry.model} has no registration record" in out
    with acting_as("approver"):
        registry.client.set_registered_model_alias(registry.model, "champion", v)
    code, out = cli(capsys, "reviewer", "predict", "--params", served["params"], "hi")
    assert code == 1 and f"'champion' points at v{v}, but the audit trail says v1" in out


def test_the_trail_tag_is_no_off_switch(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    registry = served["registry"]
    with acting_as("approver"):
        registry.client.set_registered_model_tag(
            registry.model, "mlra.audit.trail", "/tmp/elsewhere"
        )
    code, out = cli(capsys, "reviewer", "audit", "verify")
    assert code == 1 and "records its audit trail at '/tmp/elsewhere'" in out
    with (
        acting_as("pipeline"),
        pytest.raises(IntegrityError, match="records its audit trail at '/tmp/elsewhere'"),
    ):
        promote(registry, "1", policy(approval="automatic"), "pipeline")
    code, out = cli(capsys, "reviewer", "predict", "--params", served["params"], "hi")
    assert code == 1 and "/tmp/elsewhere" in out
    with acting_as("reviewer"):
        assert registry.alias("champion") == "1"  # nothing was promoted


def test_a_password_in_the_tracking_uri_is_never_printed(tmp_path: Path) -> None:
    """One real CLI process, pointed at a port where nothing listens, with the pipeline's
    password in the URI: the error names the address with the password redacted."""
    secret = password("pipeline")
    trail = tmp_path / "audit.jsonl"
    trail.write_text("")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"http://pipeline:{secret}@127.0.0.1:{_free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # MLflow's default retries take 4 minutes
        "MLRA_AUDIT": str(trail),
        "MLRA_HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-m", "mlra.cli", "audit", "verify"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "cannot reach http://pipeline:***@127.0.0.1:" in out, out
    assert secret not in out and "local-only" not in out
