"""The Sprites SDK's failures, read: the HTTP status, the API's error code, a short
reason, and the :class:`ComputeError` an operator is shown (with what to do).

Never carries a whole response body into a message or a log: :func:`describe`
keeps the API's own short message and cuts it.
"""

from __future__ import annotations

import json
import re

from sprites import AuthenticationError, NetworkError
from sprites.exceptions import APIError

from interlockd.compute import remote
from interlockd.compute.base import ComputeError


def compute_error(provider: str, what: str, exc: BaseException, base_url: str) -> ComputeError:
    """``exc`` (raised while doing ``what``) as ``provider``'s error, with a hint."""
    if isinstance(exc, AuthenticationError) or status_of(exc) == 401:
        hint = "the token was refused: check the fly_sprites provider's token"
    elif isinstance(exc, NetworkError) or (isinstance(exc, APIError) and status_of(exc) is None):
        hint = f"cannot reach {base_url}: {describe(exc)}"
    elif _code(exc) == "concurrent_sprite_limit_exceeded":
        hint = (
            "too many sprites are running at once for the org's plan (pay-as-you-go "
            "allows 3): retry when one has gone idle, or raise the plan's limit"
        )
    elif status_of(exc) == 429:
        hint = "rate limited by Sprites: try again shortly"
    elif (status := status_of(exc)) is not None and status >= 500:
        hint = f"Sprites failed ({describe(exc)}): try again later"
    else:
        hint = describe(exc)
    return ComputeError(provider, f"{what}: {hint}")


_FAILED = re.compile(r"\(status (?P<status>\d{3})\)(?::\s*(?P<body>.*))?", re.DOTALL)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK error, when it had one."""
    if isinstance(exc, APIError) and exc.status_code is not None:
        return exc.status_code
    match = _FAILED.search(str(exc))
    return int(match["status"]) if match else None


def _body(exc: BaseException) -> str:
    if isinstance(exc, APIError) and exc.response:
        return exc.response
    match = _FAILED.search(str(exc))
    return (match["body"] or "") if match else ""


def _code(exc: BaseException) -> str:
    """The API's error code (``{"error": "..."}``), when the answer carried one."""
    try:
        data = json.loads(_body(exc))
    except ValueError:
        return ""
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def describe(exc: BaseException) -> str:
    """A short, single-line reason: the API's own message when it gave one, else the
    SDK's, never a whole response body."""
    reason = ""
    try:
        data = json.loads(_body(exc))
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("error", "message") if data.get(k)]
        errors = data.get("errors")
        if isinstance(errors, list):
            parts.extend(str(e) for e in errors)
        reason = ": ".join(dict.fromkeys(parts))
    if not reason:
        reason = _FAILED.sub("", str(exc)).strip(" :") or type(exc).__name__
    status = status_of(exc)
    return remote.short(f"HTTP {status}: {reason}" if status else reason)
