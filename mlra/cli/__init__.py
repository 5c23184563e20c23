"""The ``mlra`` command.

Each group of subcommands lives in its own module under ``mlra/cli/`` and exposes
``register(subparsers)``. Heavy libraries (torch, lightning, mlflow, great_expectations) are
imported inside the command that needs them, so ``mlra --help`` starts in well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from mlra import __version__
from mlra._env import apply_runtime_defaults
from mlra.errors import MlraError

__all__ = ["build_parser", "main"]

# Modules that contribute subcommands, in the order they appear in ``mlra --help``.
COMMAND_MODULES = (
    "mlra.cli.pipeline",
    "mlra.cli.data",
    "mlra.cli.train",
    "mlra.cli.demo",
    "mlra.cli.audit",
    "mlra.cli.registry",
    "mlra.cli.modules",
    "mlra.cli.keys",
    "mlra.cli.ui",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlra",
        description="Modular low-rank adapters and an auditable retraining pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"mlra {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``mlra`` command; returns its exit code.

    Nothing printed carries a secret: log records, warnings and tracebacks go through
    :func:`mlra.redact.redact_text`. A user's error (:class:`~mlra.errors.MlraError`), a service
    that cannot be reached and a file that cannot be read print one line, not a traceback; an
    unexpected bug prints its (redacted) traceback. Both exit 1.
    """
    from mlra.redact import install

    install()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    apply_runtime_defaults()
    if args.command not in _LONG_RUNNING:
        # an interactive command against a tracking server that is down answers in seconds, not
        # after MLflow's default seven retries (~4 minutes); the pipeline keeps them (and retries
        # transient faults itself, pipeline.retries)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure ends here, as one redacted report
        print(_report(exc, args), end="", file=sys.stderr)
        return 1


_LONG_RUNNING = frozenset({"run", "schedule", "train", "serve", "ui"})


def _report(exc: BaseException, args: argparse.Namespace) -> str:
    """What to print for a failed command: one line, or an unexpected bug's traceback."""
    from mlra.redact import format_exception, redact_text

    prefix = f"mlra {args.command}: error: "
    if isinstance(exc, MlraError):
        return prefix + redact_text(str(exc)) + "\n"
    unreachable = _unreachable(exc, args)
    if unreachable is not None:
        return prefix + redact_text(unreachable) + "\n"
    if isinstance(exc, OSError):
        return prefix + redact_text(str(exc)) + "\n"
    return (
        f"mlra {args.command}: unexpected error (a bug; please report it with this traceback):\n"
        + format_exception(exc)
    )


# Exceptions that mean "a service could not be reached", by module.qualname of a class in the MRO
# (matched by name, so this module imports none of the libraries that raise them).
_CONNECTION_ERRORS = frozenset(
    {
        "builtins.ConnectionError",
        "builtins.TimeoutError",
        "socket.gaierror",
        "requests.exceptions.ConnectionError",
        "requests.exceptions.Timeout",
        "urllib3.exceptions.NewConnectionError",
        "urllib3.exceptions.MaxRetryError",
        "httpx.ConnectError",
        "httpx.ConnectTimeout",
        "sqlalchemy.exc.OperationalError",
        "sqlalchemy.exc.InterfaceError",
    }
)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>()]+", re.IGNORECASE)
_DBAPI_PREFIX = re.compile(r"^\([\w.]+\)\s*")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen) and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _unreachable(exc: BaseException, args: argparse.Namespace) -> str | None:
    """ "cannot reach WHERE (WHY); what to do" when ``exc`` says a service could not be reached
    (or MLflow refused a request); None otherwise."""
    chain = _chain(exc)
    names = {f"{k.__module__}.{k.__qualname__}" for e in chain for k in type(e).__mro__}
    mlflow_error = any(n.startswith("mlflow.exceptions.") for n in names)
    if not names & _CONNECTION_ERRORS:
        if mlflow_error:  # the server answered, with an error: show MLflow's own first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            refused = re.search(r"\b40[13]\b|unauthori[sz]ed|forbidden|credential", first, re.I)
            return f"MLflow: {first}" + (f"; {_hint('mlflow', args)}" if refused else "")
        return None
    text = " ".join(str(e) for e in chain)
    why_match = _ERRNO.search(text)
    why = why_match.group(1).strip() if why_match else type(chain[-1]).__name__
    services = _services(args)
    where = next((m.group() for m in _URL.finditer(text) if "sqlalche.me" not in m.group()), None)
    kind = "mlflow" if mlflow_error or "requests.exceptions.ConnectionError" in names else None
    database = next((e for e in chain if type(e).__module__ == "sqlalchemy.exc"), None)
    if database is not None:  # its message names host and port, not the URL: name the URLs
        first = str(database).strip().splitlines()[0] if str(database).strip() else ""
        why = _DBAPI_PREFIX.sub("", first) or why
        databases = [f"{k} {u}" for k, u in services.items() if _is_database(u)]
        servers = [d for d in databases if " sqlite:" not in d]  # a server, before a local file
        databases = servers or databases
        where = " or ".join(databases) if databases else "the database"
        kind = "database"
    elif any(n.startswith("httpx.") for n in names):
        kind = "prefect"
    if where is None:
        where = services.get("MLflow store", "a service") if kind == "mlflow" else "a service"
    return f"cannot reach {where} ({why}); {_hint(kind, args)}"


def _services(args: argparse.Namespace) -> dict[str, str]:
    """The services this command may talk to, by what they are."""
    import os

    from mlra._env import tracking_uri

    found = {"MLflow store": getattr(args, "tracking_uri", None) or tracking_uri()}
    audit = getattr(args, "path", None) if args.command == "audit" else None
    if audit or os.environ.get("MLRA_AUDIT"):
        found["audit trail"] = str(audit or os.environ["MLRA_AUDIT"])
    if os.environ.get("PREFECT_API_URL"):
        found["Prefect API"] = os.environ["PREFECT_API_URL"]
    return found


def _is_database(uri: str) -> bool:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return bool(scheme) and not scheme.startswith(("http", "file"))


def _hint(kind: str | None, args: argparse.Namespace) -> str:
    if kind == "mlflow":
        option = " (or --tracking-uri)" if hasattr(args, "tracking_uri") else ""
        return (
            f"check that the MLflow server runs and that MLFLOW_TRACKING_URI{option} points at "
            "it, with valid credentials"
        )
    if kind == "prefect":
        return "check that the Prefect server runs and that PREFECT_API_URL points at it"
    if kind == "database":
        return (
            "check that the database runs and that the URL (MLFLOW_TRACKING_URI, "
            "--tracking-uri, MLRA_AUDIT, --path) points at it, with valid credentials"
        )
    return "check that the service runs and that its URL is right"
