"""Secrets never print: :func:`redact` replaces them in values, messages, log lines and tracebacks.

What counts as a secret:

- the password in a URI (``scheme://user:PASSWORD@host``, ``scheme://:TOKEN@host``), and the user
  part of an http(s) URI without a password (``https://TOKEN@host``: how tokens ride in URLs);
- query parameters with secret-like names (``?token=…&sig=…&X-Amz-Signature=…``);
- values under secret-like keys: in a mapping (``{"api_key": …}``) and in text
  (``password=…``, ``"client_secret": "…"``, ``Authorization: Bearer …``);
- ``Bearer …`` credentials and PEM private-key blocks anywhere in text.

Secret-like key names: password, passwd, passphrase, pass, secret, token, api key, credential,
auth, authorization, private key, bearer, cookie (``passed``, ``bypass``, ``author`` and
``tokenizer`` are not). User names, hosts, ports and paths stay, so a redacted message still says
what could not be reached.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, TextIO

__all__ = ["REDACTED", "install", "is_secret_key", "redact", "redact_text"]

REDACTED: Final = "***"

# Key names whose values are secrets: password, db_passwd, client_secret, api_key, auth_token,
# Authorization, private_key, ... but not passed, bypass, author or tokenizer.
_SECRET_WORDS: Final = (
    r"(?<![a-z])pass(?:word|wd|phrase)?(?![a-z])|secret|token(?!i[sz])|api[_-]?key|credential"
    r"|(?<![a-z])auth(?:orization)?(?![a-z])|private[_-]?key|bearer|cookie"
)
_SECRET_KEY: Final = re.compile(_SECRET_WORDS, re.IGNORECASE)
# query parameters that carry signatures or keys without a secret-like word in their name
_SECRET_PARAM: Final = re.compile(
    r"(?:x-amz-)?(?:sig|signature|key|pwd|code|credential|security-token)", re.IGNORECASE
)

# scheme://USERINFO@ (USERINFO up to the last @ before the host's end)
_URI_USERINFO: Final = re.compile(
    r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/?#\s@'\"<>]*(?:@[^/?#\s@'\"<>]*)*)@",
    re.IGNORECASE,
)
_QUERY_PARAM: Final = re.compile(r"(?P<lead>[?&;](?P<name>[\w.~-]+)=)(?P<value>[^&#\s'\"<>]*)")
_TOKEN_SCHEMES: Final = frozenset({"http", "https", "ws", "wss", "ftp", "ftps", "git+https"})
# KEY <sep> VALUE in free text; KEY contains a secret word; VALUE quoted or one word (with an
# optional scheme word: "Authorization: Bearer abc", "auth=Basic abc")
_KEY_VALUE: Final = re.compile(
    r"(?P<key>[\w.-]*(?:" + _SECRET_WORDS + r")[\w.-]*)"
    r"(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?:(?P<q>[\"'])(?P<quoted>(?:(?!(?P=q)).)*)(?P=q)"
    r"|(?P<scheme>(?:bearer|basic|token|digest)\s+)?(?P<word>[^\s\"'&,;)\]}]+))",
    re.IGNORECASE,
)
_BEARER: Final = re.compile(r"\b(?P<kind>bearer)\s+(?!\*\*\*)[\w.~+/=-]+", re.IGNORECASE)
_PEM_KEY: Final = re.compile(
    r"-----BEGIN (?P<kind>[A-Z ]*PRIVATE KEY)-----.*?-----END (?P=kind)-----", re.DOTALL
)


def is_secret_key(name: object) -> bool:
    """Whether a value stored under ``name`` is treated as a secret."""
    return bool(_SECRET_KEY.search(str(name)))


def redact(value: Any) -> Any:
    """``value`` with secrets replaced by ``***``: mappings by key (recursively), lists and tuples
    item by item, strings by :func:`redact_text`; anything else unchanged."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match["scheme"], match["userinfo"]
    if ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        return f"{scheme}{user}:{REDACTED}@"
    if userinfo and scheme[:-3].lower() in _TOKEN_SCHEMES:
        return f"{scheme}{REDACTED}@"
    return match.group()


def _param(match: re.Match[str]) -> str:
    name = match["name"]
    if is_secret_key(name) or _SECRET_PARAM.fullmatch(name):
        return f"{match['lead']}{REDACTED}"
    return match.group()


def _key_value(match: re.Match[str]) -> str:
    head = match["key"] + match["sep"]
    if match["q"]:
        return f"{head}{match['q']}{REDACTED}{match['q']}"
    if match["word"] == REDACTED:
        return match.group()
    return f"{head}{match['scheme'] or ''}{REDACTED}"


def _pem(match: re.Match[str]) -> str:
    return f"-----BEGIN {match['kind']}-----{REDACTED}-----END {match['kind']}-----"


def redact_text(text: str) -> str:
    """``text`` with every secret it shows replaced (see the module docstring)."""
    if not text:
        return text
    text = _PEM_KEY.sub(_pem, text)
    text = _URI_USERINFO.sub(_userinfo, text)
    text = _QUERY_PARAM.sub(_param, text)
    text = _KEY_VALUE.sub(_key_value, text)
    return _BEARER.sub(lambda m: f"{m['kind']} {REDACTED}", text)


# ------------------------------------------------------------------- logging and tracebacks


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` as Python prints it, redacted."""
    return redact_text("".join(traceback.format_exception(exc)))


def _redact_record(record: logging.LogRecord) -> None:
    """Redact a log record's message in place. A record without secrets is left as it is; one
    with secrets keeps its format and arguments (redacted) when that still formats to the redacted
    message (formatters that read ``args``, like uvicorn's, go on working), else becomes the
    redacted message alone."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the handler reports it, as without redaction
        return
    clean = redact_text(message)
    if clean == message:
        return
    if isinstance(record.msg, str):
        record.msg = redact_text(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
    elif isinstance(record.args, Mapping):
        record.args = redact(record.args)
    try:
        same = record.getMessage() == clean
    except Exception:
        same = False
    if not same:
        record.msg, record.args = clean, None


_installed = threading.Lock()
_state: dict[str, Any] = {}


def install() -> None:
    """Redact every log record and every uncaught exception's traceback from now on.

    Wraps the log-record factory (so records of every logger, whatever handler prints them, carry
    a redacted message and traceback), ``warnings.showwarning``, and ``sys.excepthook`` /
    ``threading.excepthook``. Safe to call more than once.
    """
    with _installed:
        if _state:
            return
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = format_exception(record.exc_info[1]).rstrip("\n")
            if record.stack_info:
                record.stack_info = redact_text(record.stack_info)
            return record

        def excepthook(
            kind: type[BaseException], exc: BaseException, tb: TracebackType | None
        ) -> None:
            sys.stderr.write(format_exception(exc.with_traceback(tb)))

        def thread_hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
                name = args.thread.name if args.thread else "?"
                sys.stderr.write(f"Exception in thread {name}:\n")
                sys.stderr.write(format_exception(args.exc_value))

        show = warnings.showwarning

        def showwarning(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            show(redact_text(str(message)), category, filename, lineno, file, line)

        logging.setLogRecordFactory(factory)
        warnings.showwarning = showwarning
        sys.excepthook = excepthook
        threading.excepthook = thread_hook
        _state.update(factory=previous)
