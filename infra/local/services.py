"""Start and stop, on this machine and without Docker, the services a team's mlra runs against:

- **PostgreSQL** (Debian's package): one throwaway cluster in ``<dir>/postgres`` on 127.0.0.1,
  with the databases ``mlflow``, ``prefect`` and ``mlra_audit`` (the audit trail's SQL backend);
- an **MLflow tracking server** on that Postgres, serving (proxying) the artifact store in
  ``<dir>/mlartifacts``: clients upload and download artifacts over HTTP, never by path;
- a **Prefect server** on that Postgres, a **process work pool** and a **worker** polling it.

Usage (run it with the project's interpreter, which has mlflow, prefect and psycopg2)::

    .venv/bin/python infra/local/services.py up      [--dir DIR] [--only postgres mlflow ...]
    .venv/bin/python infra/local/services.py down    [--dir DIR] [--only mlflow]
    .venv/bin/python infra/local/services.py restart mlflow
    .venv/bin/python infra/local/services.py status  [--json]
    source .mlra/services/env.sh      # MLFLOW_TRACKING_URI, PREFECT_API_URL, MLRA_AUDIT, ...

``up`` is idempotent (a service already running and healthy is left alone), waits until each
service answers (Postgres: a real connection; MLflow: ``/health``; Prefect: ``/api/health``; the
worker: the pool turns READY) and records each start-up time in ``<dir>/services.json``. ``down``
stops each service by the PID it recorded (checking that the PID is still that service), first
politely (SIGTERM; SIGINT for Postgres' fast shutdown), after a grace period with SIGKILL.

Credentials come from the environment: ``MLRA_PG_USER`` (default ``mlra``) and
``MLRA_PG_PASSWORD`` (default ``mlra-local-only``: a local-only default for a cluster that listens
on 127.0.0.1 only; set your own anywhere else). Ports: ``MLRA_PG_PORT`` (55432),
``MLRA_MLFLOW_PORT`` (5055), ``MLRA_PREFECT_PORT`` (4205), or the flags; 0 picks a free port.
``MLRA_MLFLOW_WORKERS`` (1) sets MLflow's worker processes: 1 is right for a small machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICES = ("postgres", "mlflow", "prefect", "worker")  # start order; stop in reverse
DATABASES = ("mlflow", "prefect", "mlra_audit")
DEFAULT_DIR = Path(".mlra/services")
DEFAULT_POOL = "mlra-process"
LOCAL_ONLY_PASSWORD = "mlra-local-only"  # a documented local-only default, never a secret
STATE = "services.json"
QUIET_ENV = {  # no telemetry, no network: as mlra._env sets for the library
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Settings and state


@dataclass
class Settings:
    dir: Path
    pg_port: int
    mlflow_port: int
    prefect_port: int
    pg_user: str
    pg_password: str
    pool: str
    mlflow_workers: int
    prefect_ui: bool
    bin_dir: Path  # where mlflow and prefect are (the interpreter's folder)

    @property
    def pg_dir(self) -> Path:
        return self.dir / "postgres"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def db_url(self, database: str, driver: str = "psycopg2", password: bool = True) -> str:
        secret = self.pg_password if password else "***"
        return f"postgresql+{driver}://{self.pg_user}:{secret}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def client_env(self) -> dict[str, str]:
        """What a client (mlra, a flow run, the worker) needs to use these services."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "PREFECT_API_URL": self.prefect_api,
            "MLRA_AUDIT": self.db_url("mlra_audit"),
            "MLRA_WORK_POOL": self.pool,
            "MLRA_SERVICES_DIR": str(self.dir),
        }


def _port(value: str | int | None, default: int) -> int:
    port = default if value in (None, "") else int(value)
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    if not 0 < port < 65536:
        raise ServiceError(f"port {port} is out of range (1-65535, or 0 for a free one)")
    return port


def load_settings(args: argparse.Namespace) -> Settings:
    folder = Path(args.dir or os.environ.get("MLRA_SERVICES_DIR") or DEFAULT_DIR).resolve()
    saved = read_state(folder).get("settings", {})

    def pick(flag: int | None, env: str, key: str, default: int) -> int:
        if flag is not None:
            return _port(flag, default)
        if key in saved:  # a running set keeps its ports (idempotent up, down, restart)
            return int(saved[key])
        return _port(os.environ.get(env), default)

    workers = os.environ.get("MLRA_MLFLOW_WORKERS", "1")
    if not workers.isdigit() or int(workers) < 1:
        raise ServiceError(f"MLRA_MLFLOW_WORKERS must be a positive integer, got {workers!r}")
    return Settings(
        dir=folder,
        pg_port=pick(getattr(args, "pg_port", None), "MLRA_PG_PORT", "pg_port", 55432),
        mlflow_port=pick(
            getattr(args, "mlflow_port", None), "MLRA_MLFLOW_PORT", "mlflow_port", 5055
        ),
        prefect_port=pick(
            getattr(args, "prefect_port", None), "MLRA_PREFECT_PORT", "prefect_port", 4205
        ),
        pg_user=os.environ.get("MLRA_PG_USER", "mlra"),
        pg_password=os.environ.get("MLRA_PG_PASSWORD", LOCAL_ONLY_PASSWORD),
        pool=os.environ.get("MLRA_WORK_POOL", DEFAULT_POOL),
        mlflow_workers=int(workers),
        prefect_ui=not getattr(args, "no_ui", False),
        bin_dir=Path(sys.executable).parent,
    )


def read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ServiceError(f"{path} is not valid JSON ({exc}); remove it and run up again") from exc
    return data if isinstance(data, dict) else {}


def write_state(s: Settings, state: dict[str, Any]) -> None:
    state["settings"] = {
        "pg_port": s.pg_port,
        "mlflow_port": s.mlflow_port,
        "prefect_port": s.prefect_port,
    }
    state["urls"] = {
        "mlflow": s.mlflow_url,
        "prefect_api": s.prefect_api,
        "audit": s.db_url("mlra_audit", password=False),
    }
    tmp = s.dir / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(s.dir / STATE)
    env = s.client_env()
    lines = ["# written by infra/local/services.py up: `source` it to use these services"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    env_file = s.dir / "env.sh"
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)  # it holds the database password


# ---------------------------------------------------------------------------------------------
# Processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of ours counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _is_ours(pid: int, marker: str) -> bool:
    """The PID is alive and still the service we started (not a reused PID)."""
    return _alive(pid) and marker in _cmdline(pid)


def _launch(
    name: str, argv: Sequence[str], s: Settings, env: dict[str, str], cwd: Path | None = None
) -> int:
    """Start a service in its own session (so `down` can stop it with its children)."""
    s.logs.mkdir(parents=True, exist_ok=True)
    log = (s.logs / f"{name}.log").open("ab")
    log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(argv)}\n".encode())
    log.flush()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(cwd or s.dir),
        start_new_session=True,
    )
    log.close()
    return proc.pid


def _wait(what: str, ready: Callable[[], bool], timeout: float, pid: int | None, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not _alive(pid):
            raise ServiceError(f"{what} exited during start-up; its log: {log}\n{_tail(log)}")
        time.sleep(0.2)
    raise ServiceError(f"{what} did not become ready within {timeout:.0f} s; log: {log}")


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_ok(url: str, expect: Callable[[bytes], bool]) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and expect(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop_pid(name: str, pid: int, marker: str, sig: int, grace: float) -> str:
    """Stop one recorded PID (and its process group) if it is still ours."""
    if not _is_ours(pid, marker):
        return f"{name}: not running"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return f"{name}: stopped (pid {pid})"
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return f"{name}: killed after {grace:.0f} s (pid {pid})"


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def pg_bin_dir() -> Path | None:
    """Debian's PostgreSQL binaries: ``$PG_BIN``, else the newest /usr/lib/postgresql/N/bin,
    else wherever ``initdb`` is on PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    return Path(which).resolve().parent if which else None


def _pg_runner() -> list[str]:
    """Postgres refuses to run as root: run its programs as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "running as root, and there is no `postgres` user to run PostgreSQL as; "
            "install Debian's package (apt-get install -y postgresql) or run as another user"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


def _pg_connect(s: Settings, database: str = "postgres") -> Any:
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1",
        port=s.pg_port,
        user=s.pg_user,
        password=s.pg_password,
        dbname=database,
        connect_timeout=3,
    )


def _pg_ready(s: Settings) -> bool:
    try:
        _pg_connect(s).close()
        return True
    except Exception:
        return False


def start_postgres(s: Settings, state: dict[str, Any]) -> str:
    bindir = pg_bin_dir()
    if bindir is None or not (bindir / "postgres").exists():
        raise ServiceError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres, no initdb on "
            "PATH); install it with `apt-get install -y postgresql` or set PG_BIN"
        )
    runner = _pg_runner()
    data = s.pg_dir / "data"
    pid = state.get("pids", {}).get("postgres")
    if pid and _is_ours(pid, str(data)) and _pg_ready(s):
        return f"postgres: already running (pid {pid}, port {s.pg_port})"
    started = time.monotonic()
    s.pg_dir.mkdir(parents=True, exist_ok=True)
    if runner:
        s.dir.chmod(0o755)  # the postgres user must reach its folder
        shutil.chown(s.pg_dir, "postgres", "postgres")
        probe = subprocess.run([*runner, "test", "-w", str(s.pg_dir)], check=False)
        if probe.returncode != 0:
            raise ServiceError(
                f"the postgres user cannot write {s.pg_dir} (a parent folder is closed to it); "
                "choose a --dir under a folder others can enter, e.g. /var/tmp"
            )
    initdb_s = None
    if not (data / "PG_VERSION").exists():
        pwfile = s.pg_dir / "pwfile"
        pwfile.write_text(s.pg_password + "\n")
        pwfile.chmod(0o600)
        if runner:
            shutil.chown(pwfile, "postgres", "postgres")
        t0 = time.monotonic()
        result = subprocess.run(
            [
                *runner,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                s.pg_user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ServiceError(f"initdb failed for {data}:\n{result.stdout}{result.stderr}")
        initdb_s = round(time.monotonic() - t0, 2)
    socket_dir = s.pg_dir  # short path, owned by postgres
    argv = [
        *runner,
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(s.pg_port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={socket_dir}",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=64MB",
    ]
    launched = _launch("postgres", argv, s, {**os.environ, "LC_ALL": "C.UTF-8"})
    _wait(
        f"PostgreSQL on 127.0.0.1:{s.pg_port}",
        lambda: _pg_ready(s),
        60,
        launched,
        s.logs / "postgres.log",
    )
    # the postmaster's own PID (runuser forks it as a child): stop signals go to it
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    _create_databases(s)
    state.setdefault("pids", {})["postgres"] = postmaster
    timing = {"startup_s": round(time.monotonic() - started, 2)}
    if initdb_s is not None:
        timing["initdb_s"] = initdb_s
    state.setdefault("startup", {})["postgres"] = timing
    return f"postgres: ready on 127.0.0.1:{s.pg_port} in {timing['startup_s']} s (pid {postmaster})"


def _create_databases(s: Settings) -> None:
    conn = _pg_connect(s)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def stop_postgres(s: Settings, state: dict[str, Any]) -> str:
    pid = state.get("pids", {}).get("postgres")
    if not pid:
        return "postgres: not running"
    # SIGINT: PostgreSQL's fast shutdown (clients disconnected, everything committed is kept)
    return _stop_pid("postgres", pid, str(s.pg_dir / "data"), signal.SIGINT, 60)


# ---------------------------------------------------------------------------------------------
# MLflow, Prefect, the worker


def _tool_env(s: Settings, **extra: str) -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV, **extra}
    env["PATH"] = f"{s.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_mlflow(s: Settings, state: dict[str, Any]) -> str:
    marker = f"--port {s.mlflow_port}"
    pid = state.get("pids", {}).get("mlflow")
    health = f"{s.mlflow_url}/health"
    if pid and _is_ours(pid, marker) and _http_ok(health, lambda b: b.strip() == b"OK"):
        return f"mlflow: already running (pid {pid}, {s.mlflow_url})"
    started = time.monotonic()
    artifacts = s.dir / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        str(s.bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        s.db_url("mlflow"),
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(s.mlflow_port),
        "--workers",
        str(s.mlflow_workers),
    ]
    env = _tool_env(s, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    launched = _launch("mlflow", argv, s, env)
    _wait(
        f"the MLflow server on {s.mlflow_url}",
        lambda: _http_ok(health, lambda b: b.strip() == b"OK"),
        180,
        launched,
        s.logs / "mlflow.log",
    )
    state.setdefault("pids", {})["mlflow"] = launched
    state.setdefault("startup", {})["mlflow"] = {"startup_s": round(time.monotonic() - started, 2)}
    return f"mlflow: ready on {s.mlflow_url} in {state['startup']['mlflow']['startup_s']} s"


def stop_mlflow(s: Settings, state: dict[str, Any]) -> str:
    pid = state.get("pids", {}).get("mlflow")
    return (
        _stop_pid("mlflow", pid, f"--port {s.mlflow_port}", signal.SIGTERM, 20)
        if pid
        else "mlflow: not running"
    )


def _prefect_env(s: Settings, **extra: str) -> dict[str, str]:
    return _tool_env(
        s,
        PREFECT_HOME=str(s.dir / "prefect"),
        PREFECT_API_URL=s.prefect_api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        **extra,
    )


def start_prefect(s: Settings, state: dict[str, Any]) -> str:
    marker = f"--port {s.prefect_port}"
    pid = state.get("pids", {}).get("prefect")
    health = f"{s.prefect_api}/health"
    if pid and _is_ours(pid, marker) and _http_ok(health, lambda b: b.strip() == b"true"):
        return f"prefect: already running (pid {pid}, {s.prefect_api})"
    started = time.monotonic()
    env = _prefect_env(s, PREFECT_API_DATABASE_CONNECTION_URL=s.db_url("prefect", "asyncpg"))
    env.pop("PREFECT_API_URL")  # the server itself is not a client
    argv = [
        str(s.bin_dir / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(s.prefect_port),
        "--analytics-off",
        "--ui" if s.prefect_ui else "--no-ui",
    ]
    launched = _launch("prefect", argv, s, env)
    _wait(
        f"the Prefect server on {s.prefect_api}",
        lambda: _http_ok(health, lambda b: b.strip() == b"true"),
        180,
        launched,
        s.logs / "prefect.log",
    )
    state.setdefault("pids", {})["prefect"] = launched
    state.setdefault("startup", {})["prefect"] = {"startup_s": round(time.monotonic() - started, 2)}
    return f"prefect: ready on {s.prefect_api} in {state['startup']['prefect']['startup_s']} s"


def stop_prefect(s: Settings, state: dict[str, Any]) -> str:
    pid = state.get("pids", {}).get("prefect")
    return (
        _stop_pid("prefect", pid, f"--port {s.prefect_port}", signal.SIGTERM, 30)
        if pid
        else "prefect: not running"
    )


def _pool_ready(s: Settings) -> bool:
    return _http_ok(
        f"{s.prefect_api}/work_pools/{s.pool}", lambda b: json.loads(b).get("status") == "READY"
    )


def start_worker(s: Settings, state: dict[str, Any]) -> str:
    marker = f"--pool {s.pool}"
    pid = state.get("pids", {}).get("worker")
    if pid and _is_ours(pid, marker) and _pool_ready(s):
        return f"worker: already running (pid {pid}, pool {s.pool})"
    started = time.monotonic()
    argv = [
        str(s.bin_dir / "prefect"),
        "worker",
        "start",
        "--pool",
        s.pool,
        "--type",
        "process",
        "--name",
        f"mlra-local-{socket.gethostname()}",
    ]
    # the worker creates the pool (with the process type's base job template) when it is
    # missing; its environment reaches every flow run it starts: the services' addresses
    launched = _launch("worker", argv, s, _prefect_env(s) | s.client_env(), cwd=Path.cwd())
    _wait(
        f"the worker of pool {s.pool!r}",
        lambda: _pool_ready(s),
        120,
        launched,
        s.logs / "worker.log",
    )
    state.setdefault("pids", {})["worker"] = launched
    state.setdefault("startup", {})["worker"] = {"startup_s": round(time.monotonic() - started, 2)}
    return f"worker: polling pool {s.pool!r} after {state['startup']['worker']['startup_s']} s"


def stop_worker(s: Settings, state: dict[str, Any]) -> str:
    pid = state.get("pids", {}).get("worker")
    return (
        _stop_pid("worker", pid, f"--pool {s.pool}", signal.SIGTERM, 20)
        if pid
        else "worker: not running"
    )


STARTERS = {
    "postgres": start_postgres,
    "mlflow": start_mlflow,
    "prefect": start_prefect,
    "worker": start_worker,
}
STOPPERS = {
    "postgres": stop_postgres,
    "mlflow": stop_mlflow,
    "prefect": stop_prefect,
    "worker": stop_worker,
}


# ---------------------------------------------------------------------------------------------
# Commands


def up(s: Settings, only: Sequence[str]) -> dict[str, Any]:
    s.dir.mkdir(parents=True, exist_ok=True)
    state = read_state(s.dir)
    # Postgres first; then MLflow and Prefect side by side (each mostly waits for its imports
    # and migrations); the worker needs Prefect. The state is written after each step, so a
    # failure later still leaves `down` able to stop what started.
    for step in (["postgres"], ["mlflow", "prefect"], ["worker"]):
        names = [n for n in step if n in only]
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {n: pool.submit(STARTERS[n], s, state) for n in names}
        errors = []
        for name, future in futures.items():
            try:
                print(future.result(), flush=True)
            except ServiceError as exc:
                errors.append(f"{name}: {exc}")
        write_state(s, state)
        if errors:
            raise ServiceError("\n".join(errors))
    return state


def down(s: Settings, only: Sequence[str]) -> dict[str, Any]:
    state = read_state(s.dir)
    for name in reversed(SERVICES):
        if name in only:
            print(STOPPERS[name](s, state), flush=True)
            state.get("pids", {}).pop(name, None)
    if s.dir.exists():
        write_state(s, state)
    return state


def status(s: Settings) -> dict[str, Any]:
    state = read_state(s.dir)
    pids = state.get("pids", {})
    markers = {
        "postgres": str(s.pg_dir / "data"),
        "mlflow": f"--port {s.mlflow_port}",
        "prefect": f"--port {s.prefect_port}",
        "worker": f"--pool {s.pool}",
    }
    running = {n: bool(pids.get(n)) and _is_ours(pids[n], markers[n]) for n in SERVICES}
    return {
        "dir": str(s.dir),
        "running": running,
        "urls": state.get("urls", {}),
        "startup": state.get("startup", {}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "restart", "status"))
    parser.add_argument("services", nargs="*", help=f"some of {', '.join(SERVICES)} (default all)")
    parser.add_argument("--dir", default=None, help=f"state folder (default {DEFAULT_DIR})")
    parser.add_argument("--pg-port", type=int, default=None)
    parser.add_argument("--mlflow-port", type=int, default=None)
    parser.add_argument("--prefect-port", type=int, default=None)
    parser.add_argument("--no-ui", action="store_true", help="start Prefect without its UI")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    unknown = [n for n in args.services if n not in SERVICES]
    if unknown:
        parser.error(f"unknown service {unknown[0]!r}; one of: {', '.join(SERVICES)}")
    only = args.services or list(SERVICES)
    try:
        s = load_settings(args)
        if args.command == "up":
            up(s, only)
        elif args.command == "down":
            down(s, only)
        elif args.command == "restart":
            down(s, only)
            up(s, only)
        info = status(s)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "status" and not args.json:
        for name, ok in info["running"].items():
            print(f"{name}: {'running' if ok else 'stopped'}")
    if args.json:
        print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
