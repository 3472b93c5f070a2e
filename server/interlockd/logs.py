"""Structured logging: every line the daemon's process logs goes through one structlog pipeline.

The daemon's own events and the stdlib records of the libraries it uses (mcp,
httpx, httpcore, aiohttp, uvicorn, asyncio, grpc, ...) render alike: JSON lines
(or the console renderer) on stderr, redacted the same way. Uncaught
exceptions, of the main thread and of other threads, and ``warnings.warn``
are logged too instead of printed.

Logs never carry secrets: any event key that names one is redacted before
rendering, so a careless ``log.info(..., api_key=k)`` still prints nothing
sensitive. Conversation content is never logged by the daemon's own code.

Libraries log at warning and above. What they log can quote what a remote
server sent: mcp logs the pydantic error of a JSON-RPC body it failed to
parse, and that error's text holds the body; httpx errors can hold responses.
So, unless ``log_level`` is debug, a library record keeps its message cut to
:data:`LIBRARY_MESSAGE_CHARS` and, of an exception, its type and traceback
frames (code locations) but never its text. That holds at error level as
well, since the mcp tracebacks that quoted remote bodies were errors; the
frames are what a bug report needs. An uncaught exception of another
library's type is shown the same way; the daemon's own errors
(``interlockd.*``) never carry remote content and keep their text.

What is left outside this pipeline: gRPC's C core writes to the process's
stderr itself. The entry point (``cli.py``) sets ``GRPC_VERBOSITY=ERROR`` and
drops ``GRPC_TRACE`` before grpc is imported, so only its error lines remain
(absl format, such as ``E1207 … add_port.cc:83] Failed to add port``); the
daemon avoids the known one by probing its listen addresses before gRPC binds.
A crash of the interpreter itself (a fatal signal) is also printed raw.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

import structlog

_SECRET_MARKERS = ("key", "secret", "token", "authorization", "password", "credential")
# Keys that contain a marker but only name or count things.
_ALLOWED = frozenset({"key_id", "master_key_id", "tokens", "input_tokens", "output_tokens"})
#: The libraries whose loggers are held at warning (the root logger is too;
#: these are named in case one of them set its own, lower level).
LIBRARY_LOGGERS = (
    "mcp",
    "httpx",
    "httpcore",
    "aiohttp",
    "uvicorn",
    "asyncio",
    "grpc",
    "starlette",
    "anyio",
    "py.warnings",
)
#: A library record's message is cut to this many characters (unless debug).
LIBRARY_MESSAGE_CHARS = 200

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        lowered = name.lower()
        if lowered not in _ALLOWED and any(m in lowered for m in _SECRET_MARKERS):
            event[name] = "[redacted]"
    return event


def _own(exc: BaseException) -> bool:
    return type(exc).__module__.split(".", 1)[0] == "interlockd"


def _frames_only(exc_info: _ExcInfo) -> str:
    """The traceback of ``exc_info`` (causes included) with every exception's text withheld."""
    out: list[str] = []
    seen: set[int] = set()
    exc: BaseException | None = exc_info[1]
    chain: list[BaseException] = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    for depth, link in enumerate(reversed(chain)):
        if depth:
            out.append("\nThe above exception led to:\n\n")
        out.append("Traceback (most recent call last):\n")
        out.extend(traceback.format_list(traceback.extract_tb(link.__traceback__)))
        kind = type(link)
        out.append(f"{kind.__module__}.{kind.__qualname__}: [text withheld]\n")
    return "".join(out)


def _exception_fields(exc_info: _ExcInfo, *, keep_text: bool) -> dict[str, str]:
    kind = exc_info[0]
    if keep_text or _own(exc_info[1]):
        text = "".join(traceback.format_exception(*exc_info))
    else:
        text = _frames_only(exc_info)
    return {"exception_type": f"{kind.__module__}.{kind.__qualname__}", "exception": text}


def _library_record(keep_text: bool) -> structlog.typing.Processor:
    """Shape a stdlib record: its logger's name, a cut message, no exception text."""

    def process(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        record = event.get("_record")
        if record is not None:
            event["logger"] = record.name
        message = str(event.get("event", ""))
        if not keep_text and len(message) > LIBRARY_MESSAGE_CHARS:
            event["event"] = message[:LIBRARY_MESSAGE_CHARS] + "…"
        exc_info = event.pop("exc_info", None)
        if isinstance(exc_info, tuple) and exc_info[1] is not None:
            event.update(_exception_fields(exc_info, keep_text=keep_text))
        return event

    return process


def _install_excepthooks(keep_text: bool) -> None:
    """Uncaught exceptions become one log record each instead of a printed traceback."""
    log = structlog.get_logger("interlockd")

    def main_hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        log.critical(
            "uncaught_exception", **_exception_fields((kind, exc, tb), keep_text=keep_text)
        )

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        log.error(
            "uncaught_thread_exception",
            thread=args.thread.name if args.thread is not None else "",
            **_exception_fields(
                (args.exc_type, args.exc_value, args.exc_traceback), keep_text=keep_text
            ),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog, the stdlib root logger and the exception hooks, for the process."""
    numeric = getattr(logging, level.upper())
    keep_text = numeric <= logging.DEBUG
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                timestamper,
                _library_record(keep_text),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    library_level = max(numeric, logging.WARNING)
    root.setLevel(library_level)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.setLevel(max(library.level, library_level))
        library.propagate = True
    logging.captureWarnings(True)
    _install_excepthooks(keep_text)


def fatal(message: str) -> None:
    """Log why the process cannot go on, through the pipeline (the default one if unset)."""
    if not structlog.is_configured():
        configure()
    structlog.get_logger("interlockd").error("cannot_start", error=message)
