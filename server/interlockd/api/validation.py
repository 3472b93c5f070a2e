"""Shape checks of incoming requests; every failure names the field.

Only what can be judged from the request alone lives here (lengths, charsets,
ranges). Whether a provider, model, tool or session exists is decided by the
component that owns it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from interlockd.errors import InvalidArgument
from interlockd.store.base import SECRET_NAME

_END_USER = re.compile(r"[A-Za-z0-9_.@:\-]{1,128}")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_TOOL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

MAX_SYSTEM_BYTES = 256 * 1024
MAX_SECRET_BYTES = 8192
MAX_LABELS = 16
MAX_TOOLS = 128


def end_user_id(value: str, field: str = "end_user_id") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not _END_USER.fullmatch(value):
        raise InvalidArgument(field, "must be 1-128 characters of letters, digits, _ - . @ :")
    return value


def name(value: str, field: str) -> str:
    if not _NAME.fullmatch(value):
        raise InvalidArgument(field, "must be 1-64 characters of letters, digits, _ - .")
    return value


def identifier(value: str, field: str, *, required: bool = True) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return value
    if not _ID.fullmatch(value):
        raise InvalidArgument(field, f"{value[:70]!r} is not a valid id")
    return value


def message(value: str, max_bytes: int) -> str:
    if not value.strip():
        raise InvalidArgument("message", "is required and must not be blank")
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise InvalidArgument("message", f"is {size} bytes; the limit is {max_bytes}")
    return value


def system(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_SYSTEM_BYTES:
        raise InvalidArgument("system", f"exceeds {MAX_SYSTEM_BYTES} bytes")
    return value


def short_text(value: str, field: str, max_len: int) -> str:
    if len(value) > max_len:
        raise InvalidArgument(field, f"exceeds {max_len} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def secret_name(value: str, field: str = "name") -> str:
    if not SECRET_NAME.fullmatch(value):
        raise InvalidArgument(field, "must be 1-64 characters of a-z, 0-9, '_', '.' and '-'")
    return value


def secret_value(value: str, field: str = "value") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise InvalidArgument(field, f"exceeds {MAX_SECRET_BYTES} bytes")
    return value


def tools(values: Sequence[str]) -> tuple[str, ...]:
    if len(values) > MAX_TOOLS:
        raise InvalidArgument("tools", f"names {len(values)} tools; at most {MAX_TOOLS}")
    for i, value in enumerate(values):
        if not _TOOL.fullmatch(value):
            raise InvalidArgument(f"tools[{i}]", f"{value[:70]!r} is not a valid tool name")
    return tuple(values)


def labels(values: Mapping[str, str]) -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise InvalidArgument("labels", f"has {len(values)} entries; at most {MAX_LABELS}")
    for key, value in values.items():
        if not key or len(key) > 64:
            raise InvalidArgument("labels", "keys must be 1-64 characters")
        if len(value) > 256:
            raise InvalidArgument(f"labels[{key[:64]}]", "values must be at most 256 characters")
    return dict(values)


def page_size(value: int, *, default: int, maximum: int) -> int:
    if value < 0 or value > maximum:
        raise InvalidArgument("page_size", f"must be 0-{maximum}")
    return value or default


def non_negative(value: int, field: str, maximum: int) -> int:
    if value < 0 or value > maximum:
        raise InvalidArgument(field, f"must be 0-{maximum}")
    return value


#: The largest spend budget accepted, in USD (a sanity bound, not a policy).
MAX_USD = 1e12


def usd(value: float, field: str) -> float:
    """A spend budget in US dollars: 0 (no limit) or a positive finite amount."""
    if not math.isfinite(value) or value < 0 or value > MAX_USD:
        raise InvalidArgument(field, f"must be a US dollar amount from 0 (no limit) to {MAX_USD:g}")
    return value


_ENGINE = re.compile(
    r"(projects/[a-z0-9-]{1,64}/locations/[a-z0-9-]{1,64}/reasoningEngines/)?[0-9]{1,32}"
)
_LOCATION = re.compile(r"[a-z0-9-]{1,64}")


def google_options(reasoning_engine_id: str, location: str) -> dict[str, str]:
    """The Google options of a RunRequest as backend options (only those given)."""
    out: dict[str, str] = {}
    if reasoning_engine_id:
        if not _ENGINE.fullmatch(reasoning_engine_id):
            raise InvalidArgument(
                "google.reasoning_engine_id",
                "must be projects/P/locations/L/reasoningEngines/ID or a numeric ID",
            )
        out["reasoning_engine_id"] = reasoning_engine_id
    if location:
        if not _LOCATION.fullmatch(location):
            raise InvalidArgument("google.location", "must be a region such as us-central1")
        out["location"] = location
    return out
