"""``mlra ui``: the Prefect UI and the MLflow UI on the project's own stores, until interrupted.

Prefect's temporary server (what ``mlra run`` uses when ``PREFECT_API_URL`` is unset) serves no
UI; ``mlra ui`` starts ``prefect server start`` on the same database (``$PREFECT_HOME``, in the
project), so it shows every run, a paused one included, and ``mlflow server`` on the project's
MLflow store. A service the environment already points at (``PREFECT_API_URL``, an http
``MLFLOW_TRACKING_URI``) is not started again: its address is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mlra.errors import ConfigError, MlraError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ui",
        help="serve the Prefect and MLflow UIs on the project's stores (until Ctrl-C)",
        description="Start the Prefect server with its UI on the project's Prefect database "
        "(the one the temporary server of `mlra run` uses) and the MLflow UI on the project's "
        "MLflow store; print their addresses and the environment that makes later commands use "
        "this Prefect server. Ctrl-C stops both.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    p.add_argument("--prefect-port", type=int, default=4200, help="Prefect UI and API (4200)")
    p.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI (5000)")
    p.add_argument("--no-prefect", action="store_true", help="do not start the Prefect UI")
    p.add_argument("--no-mlflow", action="store_true", help="do not start the MLflow UI")
    p.add_argument(
        "--startup-timeout", type=float, default=180.0, help="seconds to wait for each (180)"
    )
    p.set_defaults(func=_ui)


def _port(value: int, what: str) -> int:
    if not 0 < value < 65536:
        raise ConfigError(f"{what} must be a port number in 1..65535, got {value}")
    return value


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the venv's own, whatever PATH says
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise MlraError(f"`{name}` is not installed in this environment ({sys.executable})")
    return found


def _answers(url: str, ok: Callable[[bytes], bool]) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200 and ok(response.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _Service:
    """One server process, its log file and the URL that says it is up."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait(self, health: str, ok: Callable[[bytes], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MlraError(f"the {self.name} server exited at start-up:\n{self.tail()}")
            if _answers(health, ok):
                return
            time.sleep(0.5)
        raise MlraError(
            f"the {self.name} server did not answer {health} within {timeout:g} s:\n{self.tail()}"
        )

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) + f"\n(log: {self.log})"

    def stop(self) -> None:
        """SIGTERM to the server's process group (mlflow runs uvicorn as a child), SIGKILL after
        20 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)  # its own session: the group id is its pid
            try:
                self.process.wait(timeout=20)
                return
            except subprocess.TimeoutExpired:
                continue


def _stop_on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _ui(args: argparse.Namespace) -> int:
    from mlra._env import artifact_root, project_dir, tracking_uri

    host = args.host
    prefect_port = _port(args.prefect_port, "--prefect-port")
    mlflow_port = _port(args.mlflow_port, "--mlflow-port")
    logs = project_dir() / "ui"
    base = dict(os.environ)
    signal.signal(signal.SIGTERM, _stop_on_term)  # `kill PID` stops the servers too
    services: list[_Service] = []
    lines: list[str] = []
    try:
        if not args.no_prefect and os.environ.get("PREFECT_API_URL"):
            api = os.environ["PREFECT_API_URL"].rstrip("/")
            lines.append(f"Prefect UI: {api.removesuffix('/api')} (the server at PREFECT_API_URL)")
        elif not args.no_prefect:
            api = f"http://{host}:{prefect_port}/api"
            home = Path(os.environ["PREFECT_HOME"])
            home.mkdir(parents=True, exist_ok=True)
            env = base | {"PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            argv = [_tool("prefect"), "server", "start", "--host", host]
            argv += ["--port", str(prefect_port), "--analytics-off", "--ui"]
            prefect = _Service("Prefect", argv, env, logs / "prefect.log")
            services.append(prefect)
            prefect.wait(f"{api}/health", lambda b: b.strip() == b"true", args.startup_timeout)
            lines += [
                f"Prefect UI: http://{host}:{prefect_port} (database in {home})",
                "  so that `mlra run`, `mlra approve` use this server, in their shell:",
                f"  export PREFECT_API_URL={api}",
                "  (a browser that reaches this machine by another name needs the server "
                "started with PREFECT_UI_API_URL=http://THAT-NAME:PORT/api)",
            ]
        uri = tracking_uri()
        if not args.no_mlflow and uri.startswith(("http://", "https://")):
            lines.append(f"MLflow UI: {uri} (the server at MLFLOW_TRACKING_URI)")
        elif not args.no_mlflow:
            env = base | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            argv = [_tool("mlflow"), "server", "--backend-store-uri", uri]
            argv += ["--default-artifact-root", artifact_root().as_uri(), "--no-serve-artifacts"]
            argv += ["--host", host, "--port", str(mlflow_port), "--workers", "1"]
            mlflow = _Service("MLflow", argv, env, logs / "mlflow.log")
            services.append(mlflow)
            url = f"http://{host}:{mlflow_port}"
            mlflow.wait(f"{url}/health", lambda b: b.strip() == b"OK", args.startup_timeout)
            lines.append(f"MLflow UI: {url} (store {uri})")
        lines.append(f"logs in {logs}; Ctrl-C stops what this command started")
        print("\n".join(lines), flush=True)
        while services and all(s.process.poll() is None for s in services):
            time.sleep(1)
        for s in services:
            if s.process.poll() is not None:
                raise MlraError(f"the {s.name} server stopped:\n{s.tail()}")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for s in reversed(services):
            s.stop()
