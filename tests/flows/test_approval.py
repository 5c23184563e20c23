"""Answering a paused retrain from the command line (:mod:`flows.approval`), on real Prefect runs.

A small flow stands in for the retrain: it has the retrain's flow name, labels itself and pauses
for the same typed input, so ``resume_paused_run`` finds and answers it as it would the real one
(tests/flows/test_retrain.py answers a real paused retrain the same way).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _stand_in(version: str, timeout: int) -> dict[str, Any]:
    from prefect import flow
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    from flows import approval
    from flows.retrain import Approval

    @flow(name=approval.RETRAIN_FLOW)
    def paused_retrain(version: str, timeout: int) -> dict[str, Any]:
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None
        approval.label_run(
            context.flow_run.id,
            name=f"v{version}-{approval.AWAITING}",
            add=(approval.AWAITING, approval.version_tag(version), approval.model_tag("m")),
        )
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout)
        approval.record_pause("m", version, str(context.flow_run.id), deadline)
        try:
            answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, poll_interval=1)
        except FlowPauseTimeout:
            return {"timed_out": True}
        finally:
            approval.forget_pause("m", version)
        return {"approve": answer.approve, "by": answer.by, "reason": answer.reason}

    result: dict[str, Any] = paused_retrain(version=version, timeout=timeout)
    return result


def _in_thread(version: str, timeout: int) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(_stand_in(version, timeout)), daemon=True)
    thread.start()
    return thread, out


def _wait_paused(version: str, seconds: float = 120) -> Any:
    from flows.approval import paused_run

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = paused_run(version, model="m")
        if run is not None:
            return run
        time.sleep(0.5)
    raise AssertionError(f"no run paused for v{version} within {seconds} s")


def _state(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def test_resume_answers_the_run_paused_for_that_version(prefect_server: None) -> None:
    from flows.approval import paused_run, resume_paused_run, run_link

    assert resume_paused_run("41", True, "dana", "nothing waits") is None
    thread, out = _in_thread("41", timeout=120)
    run = _wait_paused("41")
    assert run.name == "v41-awaiting_approval" and "version:41" in run.tags
    assert paused_run("42") is None  # another version: nothing waits for it
    assert resume_paused_run("41", False, "dana", "slices regress", model="other") is None
    assert resume_paused_run("41", False, "dana", "slices regress") == str(run.id)
    thread.join(timeout=60)
    assert out == {"approve": False, "by": "dana", "reason": "slices regress"}
    assert resume_paused_run("41", True, "dana", "again") is None  # answered: no longer paused
    assert run_link(run.id).endswith(f"/runs/flow-run/{run.id}")


def test_the_pause_record_reaches_the_paused_run_without_a_configured_api(
    prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlra run` on Prefect's temporary server: `mlra approve` elsewhere has no PREFECT_API_URL;
    the pause record names the API the paused run uses."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.approval import resume_paused_run

    monkeypatch.setenv("MLRA_HOME", str(tmp_path))
    record = tmp_path / "paused" / "m-v44.json"
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        started = time.monotonic()
        assert resume_paused_run("44", True, "dana", "none waits", model="m") is None
        assert time.monotonic() - started < 5  # no Prefect server started to find that out
    thread, out = _in_thread("44", timeout=120)
    run = _wait_paused("44")
    assert record.is_file() and str(run.id) in record.read_text()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        answered = resume_paused_run("44", True, "dana", "fine", model="m", wait_s=60)
    assert answered == str(run.id)
    assert _state(run.id).is_final()  # wait_s: returned once the run had ended
    thread.join(timeout=60)
    assert out == {"approve": True, "by": "dana", "reason": "fine"}
    assert not record.exists()  # answered: the record is gone


def test_after_the_deadline_there_is_nothing_to_resume(prefect_server: None) -> None:
    from flows.approval import resume_paused_run

    thread, out = _in_thread("43", timeout=3)
    _wait_paused("43")
    thread.join(timeout=60)
    assert out == {"timed_out": True}
    assert resume_paused_run("43", True, "dana", "too late") is None  # the caller promotes


def test_pause_message_says_how_to_answer() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.retrain import pause_message

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # a temporary server
        text = pause_message("3", "mlra-sentiment", "0b5e-id", 600)
    assert "until 20" in text and "UTC (600 s from now)" in text
    assert "flow run: 0b5e-id" in text
    assert "http://127.0.0.1:4200/runs/flow-run/0b5e-id" in text and "mlra ui" in text
    assert "mlra approve 3 --by NAME --reason TEXT" in text
    assert "mlra reject 3 --by NAME --reason TEXT" in text
    with temporary_settings({PREFECT_API_URL: "http://prefect.example:4200/api"}):
        served = pause_message("3", "mlra-sentiment", "0b5e-id", 600)
    assert "http://prefect.example:4200/runs/flow-run/0b5e-id" in served
    assert "mlra ui" not in served
