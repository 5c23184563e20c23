"""The real services, started once per test session with infra/local/services.py: PostgreSQL
(Debian's package), an MLflow tracking server on it with a proxied artifact store, a Prefect
server on it, a process work pool and its worker.

Without PostgreSQL's binaries these tests skip, saying so, unless ``MLRA_REQUIRE_SERVICES=1``
(CI sets it): then they fail. ``MLRA_SERVICES_DIR`` pointing at a running set (``make
services-up``) makes the session use it instead of starting its own, and leave it running.

Each test gets its own project folder, its own audit-trail database and its own model and
experiment names, so tests sharing the servers cannot see each other's state.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "local" / "services.py"
_TIMINGS: dict[str, Any] = {}


def load_script() -> ModuleType:
    """infra/local/services.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("mlra_infra_services", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Services:
    dir: Path
    env: dict[str, str]  # MLFLOW_TRACKING_URI, PREFECT_API_URL, MLRA_AUDIT, MLRA_WORK_POOL, ...
    pg: dict[str, Any]  # psycopg2.connect keyword arguments for the cluster's superuser
    owned: bool  # started by this session (and stopped by it)

    @property
    def mlflow(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def prefect_api(self) -> str:
        return self.env["PREFECT_API_URL"]

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(**self.pg, dbname=database)

    def create_database(self, prefix: str) -> str:
        """A fresh database; returns its SQLAlchemy URL (psycopg2)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        p = self.pg
        return f"postgresql+psycopg2://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{name}"

    def stop(self, *names: str) -> str:
        """Stop services for real, by their recorded PIDs (infra/local/services.py down)."""
        result = run_script("down", *names, "--dir", str(self.dir))
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start(self, *names: str) -> str:
        """Start services again and wait until they answer (infra/local/services.py up)."""
        result = run_script("up", *names, "--dir", str(self.dir), "--no-ui")
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def logs(self, name: str, lines: int = 60) -> str:
        path = self.dir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("MLRA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"MLRA_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _env_from(folder: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (folder / "env.sh").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            import shlex

            env[key] = shlex.split(value)[0] if value else ""
    return env


def _pg_kwargs(folder: Path) -> dict[str, Any]:
    state = json.loads((folder / "services.json").read_text())
    return {
        "host": "127.0.0.1",
        "port": int(state["settings"]["pg_port"]),
        "user": os.environ.get("MLRA_PG_USER", "mlra"),
        "password": os.environ.get("MLRA_PG_PASSWORD", load_script().LOCAL_ONLY_PASSWORD),
        "connect_timeout": 5,
    }


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    script = load_script()
    if script.pg_bin_dir() is None:
        _skip_or_fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "`apt-get install -y postgresql`, or run `make fast`"
        )
    given = os.environ.get("MLRA_SERVICES_DIR")
    if given:
        folder = Path(given).resolve()
        result = run_script("status", "--dir", str(folder), "--json")
        running = json.loads(result.stdout.splitlines()[-1])["running"] if result.stdout else {}
        if not all(running.values()):
            pytest.fail(
                f"MLRA_SERVICES_DIR={given} but not every service runs there ({running}); "
                "run `make services-up` or unset it",
                pytrace=False,
            )
        yield Services(folder, _env_from(folder), _pg_kwargs(folder), owned=False)
        return

    # a folder the postgres user can enter (pytest's own temp folders are closed to others)
    folder = Path(tempfile.mkdtemp(prefix="mlra-services-"))
    started = time.monotonic()
    result = run_script(
        "up",
        "--dir",
        str(folder),
        "--pg-port",
        "0",
        "--mlflow-port",
        "0",
        "--prefect-port",
        "0",
        "--no-ui",
        "--json",
        timeout=420,
    )
    _TIMINGS["up_s"] = round(time.monotonic() - started, 1)
    try:
        if result.returncode != 0:
            pytest.fail(
                f"infra/local/services.py up failed:\n{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
        info = json.loads(result.stdout.splitlines()[-1])
        _TIMINGS["startup"] = info["startup"]
        yield Services(folder, _env_from(folder), _pg_kwargs(folder), owned=True)
    finally:
        t0 = time.monotonic()
        down = run_script("down", "--dir", str(folder), timeout=180)
        _TIMINGS["down_s"] = round(time.monotonic() - t0, 1)
        logs = tmp_path_factory.getbasetemp() / "service-logs"
        shutil.copytree(folder / "logs", logs, dirs_exist_ok=True)  # kept for a failed run
        if down.returncode == 0:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"services down failed; state left in {folder}:\n{down.stdout}{down.stderr}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The start-up figures, in every run's output (CI's log keeps them)."""
    if not _TIMINGS:
        return
    startup = _TIMINGS.get("startup", {})
    parts = [f"{name} {t.get('startup_s')} s" for name, t in startup.items()]
    if "initdb_s" in startup.get("postgres", {}):
        parts.append(f"(initdb {startup['postgres']['initdb_s']} s)")
    terminalreporter.write_line(
        f"services: up in {_TIMINGS.get('up_s')} s [{', '.join(parts)}], "
        f"down in {_TIMINGS.get('down_s', '?')} s"
    )


@pytest.fixture
def project(services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One test's view of the services: its own project folder (MLRA_HOME), audit database,
    model and experiment; the environment points mlra at them."""
    home = tmp_path / "project"
    home.mkdir()
    tag = uuid.uuid4().hex[:8]
    trail = services.create_database("audit")
    env = {
        **services.env,
        "MLRA_HOME": str(home),
        "MLRA_AUDIT": trail,
        "PYTHONPATH": str(REPO),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {
        "home": home,
        "uri": services.mlflow,
        "trail": trail,
        "model": f"tweets-{tag}",
        "experiment": f"mlra-services-{tag}",
        "env": env,
    }
