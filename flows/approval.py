"""The Prefect side of a person's answer: where a retrain paused for approval is, how it is
labelled, and resuming it from the command line (``mlra approve`` / ``mlra reject``).

A retrain that needs a person pauses with the tags ``awaiting_approval``, ``version:V`` and
``model:NAME``; when it ends, its name and tags say the outcome (``v3-promoted``, tag
``promoted``) and its final state is named after it (``Promoted``, ``Gate failed``, …, all of
type COMPLETED, with the decision as the state's message).

While it waits, a pause record in the project (``<project>/paused/MODEL-vV.json``: run id,
deadline, the API it runs on) lets ``mlra approve`` answer it on that API — Prefect's temporary
server lives inside the paused ``mlra run`` — and tells it at once, without starting Prefect, that
nothing waits for a version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import FlowRun

__all__ = [
    "AWAITING",
    "OUTCOMES",
    "STATE_NAMES",
    "configured_api",
    "forget_pause",
    "label_run",
    "paused_run",
    "record_pause",
    "resume_paused_run",
    "run_link",
    "ui_base",
]

RETRAIN_FLOW: Final = "mlra-retrain"
AWAITING: Final = "awaiting_approval"
UI_PORT: Final = 4200  # where `mlra ui` serves the Prefect UI
# each outcome of a retrain, with the name of the flow run's final state
STATE_NAMES: Final = {
    "promoted": "Promoted",
    "gate_failed": "Gate failed",
    "awaiting_approval": "Awaiting approval",
    "rejected": "Rejected",
    "promotion_refused": "Promotion refused",
    "validation_failed": "Validation failed",
    "not_due": "Not due",
}
OUTCOMES: Final = tuple(STATE_NAMES)


def version_tag(version: str) -> str:
    return f"version:{version}"


def model_tag(model: str) -> str:
    return f"model:{model}"


def configured_api() -> str | None:
    """The Prefect API URL that settings name (environment, profile); None: a temporary server."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url).rstrip("/") if url else None


def ui_base() -> str:
    """The Prefect UI's address: ``$PREFECT_UI_URL``, else that of the server at the configured
    API URL, else what ``mlra ui`` serves (Prefect's temporary server serves no UI; ``mlra ui``
    serves one on the same database)."""
    if os.environ.get("PREFECT_UI_URL"):
        return os.environ["PREFECT_UI_URL"].rstrip("/")
    api = configured_api()
    if api:
        return api.removesuffix("/api")
    return f"http://127.0.0.1:{UI_PORT}"


def run_link(flow_run_id: UUID | str) -> str:
    """The page of a flow run in the Prefect UI."""
    return f"{ui_base()}/runs/flow-run/{flow_run_id}"


def label_run(
    flow_run_id: UUID | str,
    *,
    name: str | None = None,
    add: tuple[str, ...] = (),
    remove: tuple[str, ...] = (),
) -> None:
    """Rename a flow run and add / remove tags (the others are kept)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    run_id = UUID(str(flow_run_id))
    with get_client(sync_client=True) as client:
        tags = [t for t in client.read_flow_run(run_id).tags if t not in remove]
        tags += [t for t in add if t not in tags]
        client.update_flow_run(run_id, name=name, tags=tags)


def _pause_file(model: str, version: str) -> Path:
    from mlra._env import project_dir

    return project_dir() / "paused" / f"{model}-v{version}.json"


def record_pause(model: str, version: str, flow_run_id: str, deadline: dt.datetime) -> None:
    """Note, in the project, that ``flow_run_id`` waits for ``version``'s answer until
    ``deadline`` on the Prefect API this process uses (its temporary server, if that is it)."""
    path = _pause_file(model, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "flow_run_id": flow_run_id,
        "deadline": deadline.isoformat(),
        "api_url": _current_api_url(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _current_api_url() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL, else its temporary server's."""
    from prefect.server.api.server import SubprocessASGIServer

    url = configured_api()
    if url:
        return url
    server = SubprocessASGIServer()  # the process's one temporary server (a singleton)
    return server.api_url if server.server_process is not None else None


def forget_pause(model: str, version: str) -> None:
    """The paused run got its answer or its deadline passed: no record of it any more."""
    _pause_file(model, version).unlink(missing_ok=True)


def _recorded_pause(model: str | None, version: str) -> dict[str, Any] | None:
    """The project's record of a run paused for ``version`` whose deadline has not passed."""
    if model is None:
        return None
    try:
        record = json.loads(_pause_file(model, version).read_text(encoding="utf-8"))
        deadline = dt.datetime.fromisoformat(record["deadline"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if deadline > dt.datetime.now(dt.UTC) else None


@contextlib.contextmanager
def _api_of(record: dict[str, Any] | None) -> Iterator[None]:
    """Talk to the API the paused run uses, unless PREFECT_API_URL names one already."""
    url = (record or {}).get("api_url")
    if configured_api() or not url:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        yield


def paused_run(version: str, model: str | None = None) -> FlowRun | None:
    """The retrain run paused for ``version``'s approval whose deadline has not passed (the
    newest, should there be several); None when no run waits for it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    tags = [AWAITING, version_tag(str(version))] + ([model_tag(model)] if model else [])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RETRAIN_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                tags=FlowRunFilterTags(all_=tags),
            ),
            sort=FlowRunSort.START_TIME_DESC,
        )
    now = dt.datetime.now(dt.UTC)
    for run in runs:
        deadline = run.state.state_details.pause_timeout if run.state else None
        if deadline is None or deadline > now:
            return run
    return None


def resume_paused_run(
    version: str,
    approve: bool,
    by: str,
    reason: str,
    model: str | None = None,
    wait_s: float = 0.0,
) -> str | None:
    """Answer the retrain run paused for ``version``'s approval: it resumes, records the answer
    (an approval or a rejection, by ``by`` with ``reason``) and, when approved, promotes. Returns
    the flow run's id; None when no run waits for ``version`` (never paused, already answered, or
    its deadline passed): then the caller records the answer and promotes itself.

    With ``model`` and no ``PREFECT_API_URL``, the project's pause record decides: no record, no
    Prefect start (nothing waits); a record, its run's own API. A paused run whose process is
    gone cannot take the answer: None, as if nothing waited. ``wait_s`` > 0: return once the
    run has ended (recorded, promoted or refused), or after ``wait_s`` seconds."""
    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    record = _recorded_pause(model, str(version))
    if record is None and model is not None and not configured_api():
        return None
    try:
        with _api_of(record):
            run = paused_run(version, model)
            if run is None:
                return None
            answer = {"approve": approve, "by": by, "reason": reason}
            resume_flow_run(run.id, run_input=answer)
            if wait_s > 0:
                _wait_until_final(run.id, wait_s)
    except (NotPausedError, FlowPauseTimeout):  # answered or timed out since we looked
        return None
    except Exception as exc:  # the paused run's own server is gone with its process
        if record is not None and _unreachable(exc):
            return None
        raise
    return str(run.id)


def _wait_until_final(flow_run_id: UUID, seconds: float) -> None:
    """Until the run's state is final; a server that stopped answering ended with its run."""
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                state = client.read_flow_run(flow_run_id).state
            except Exception as exc:
                if _unreachable(exc):
                    return
                raise
            if state is not None and state.is_final():
                return
            time.sleep(0.5)


def _unreachable(exc: BaseException) -> bool:
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.TransportError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
