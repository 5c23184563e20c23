"""``mlra ui``: the Prefect UI (with its API) and the MLflow UI on a project's own stores, started
and stopped as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_ui_serves_both_uis_on_the_project_stores_and_stops_them(tmp_path: Path) -> None:
    prefect_port, mlflow_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"MLRA_HOME": str(tmp_path / ".mlra")}
    argv = [sys.executable, "-m", "mlra.cli", "ui", "--prefect-port", str(prefect_port)]
    argv += ["--mlflow-port", str(mlflow_port)]
    ui = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert ui.stdout is not None
        out = [ui.stdout.readline() for _ in range(6)]  # printed once both answer
        text = "".join(out)
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in text, text
        assert f"export PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api" in text
        assert f"MLflow UI: http://127.0.0.1:{mlflow_port}" in text
        assert str(tmp_path / ".mlra" / "mlruns.db") in text  # the project's store
        assert _get(f"http://127.0.0.1:{prefect_port}/api/health").strip() == "true"
        assert "<html" in _get(f"http://127.0.0.1:{prefect_port}/").lower()  # the UI itself
        settings = _get(f"http://127.0.0.1:{prefect_port}/ui-settings")
        assert f"http://127.0.0.1:{prefect_port}/api" in settings  # the UI's API URL
        assert _get(f"http://127.0.0.1:{mlflow_port}/health").strip() == "OK"
        assert (tmp_path / ".mlra" / "prefect" / "prefect.db").is_file()  # the project's db
    finally:
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (_refused(prefect_port) and _refused(mlflow_port)):
        time.sleep(0.5)
    assert _refused(prefect_port) and _refused(mlflow_port)  # both servers stopped


def test_ui_refuses_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    from mlra.cli import main

    assert main(["ui", "--prefect-port", "70000"]) == 1
    assert "--prefect-port must be a port number in 1..65535, got 70000" in capsys.readouterr().err
