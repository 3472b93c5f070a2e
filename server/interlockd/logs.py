"""Structured logging: JSON lines (or a console renderer) through structlog.

Logs never carry secrets: any event key that names one is redacted before
rendering, so a careless ``log.info(..., api_key=k)`` still prints nothing
sensitive. Conversation content is never logged by the daemon's own code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_MARKERS = ("key", "secret", "token", "authorization", "password", "credential")
# Keys that contain a marker but only name or count things.
_ALLOWED = frozenset({"key_id", "master_key_id", "tokens", "input_tokens", "output_tokens"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        lowered = name.lower()
        if lowered not in _ALLOWED and any(m in lowered for m in _SECRET_MARKERS):
            event[name] = "[redacted]"
    return event


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and the stdlib root logger once, for the daemon process."""
    numeric = getattr(logging, level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
