"""Anthropic SDK failures as the daemon's provider errors, and the retry policy.

One place decides what a failure means to the caller (its gRPC status, whether
retrying can help) and which failures the backend itself retries. Messages
carry the provider's own explanation (never a key or a payload), cut short.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anthropic
import httpx2
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from interlockd.errors import (
    ProviderCredentialsRejected,
    ProviderError,
    ProviderPermissionDenied,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

T = TypeVar("T")

#: Longest wait a retry-after header may impose on a retry before the first event.
MAX_RETRY_AFTER = 30.0
_MAX_DETAIL = 300
# Statuses that say the request was refused before it did anything: retrying is safe
# even for a call that is not idempotent.
_REFUSED = frozenset({429, 503, 529})
_TRANSIENT = _REFUSED | {408, 409, 500, 502, 504}
_backoff = wait_exponential_jitter(initial=0.25, max=4.0)


def detail(exc: BaseException) -> str:
    """The provider's explanation of ``exc``, one line, bounded."""
    text = ""
    if isinstance(exc, anthropic.APIStatusError) and isinstance(exc.body, dict):
        error = exc.body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
    text = " ".join((text or str(exc) or type(exc).__name__).split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _error_type(exc: anthropic.APIStatusError) -> str:
    if isinstance(exc.body, dict) and isinstance(exc.body.get("error"), dict):
        return str(exc.body["error"].get("type", ""))
    return ""


def provider_error(provider: str, exc: BaseException, doing: str) -> ProviderError:
    """What ``exc``, raised while ``doing`` something, means to the caller."""
    why = detail(exc)
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeout(provider, f"{doing} timed out: {why}")
    if isinstance(exc, anthropic.APIConnectionError | httpx2.HTTPError):
        return ProviderUnavailable(provider, f"{doing} failed, the connection broke: {why}")
    if not isinstance(exc, anthropic.APIStatusError):
        return ProviderProtocolError(provider, f"{doing} failed: {why}")
    status = exc.status_code
    kind = _error_type(exc)
    if status == 401:
        return ProviderCredentialsRejected(
            provider,
            f"the Anthropic API key was rejected (401: {why}); set a valid key for the "
            "deployment or the sandbox's secret anthropic_api_key",
        )
    if status == 403:
        return ProviderPermissionDenied(provider, f"{doing} was not permitted (403): {why}")
    if status == 429 or kind == "rate_limit_error":
        return ProviderRateLimited(provider, f"{doing} was rate limited (429): {why}")
    if status >= 500 or kind in ("overloaded_error", "api_error"):
        label = "overloaded" if status == 529 or kind == "overloaded_error" else str(status)
        return ProviderUnavailable(provider, f"{doing} failed ({label}): {why}")
    if status in (400, 404, 409, 413, 422):
        return ProviderRejected(provider, f"{doing} was refused ({status}): {why}")
    return ProviderError(provider, f"{doing} failed ({status}): {why}")


def is_transient(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether retrying the call that raised ``exc`` can help and cannot duplicate it.

    A call that is not idempotent (sending the user's message) is retried only
    when the provider refused it outright; a broken connection may have
    delivered it.
    """
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code in (_TRANSIENT if idempotent else _REFUSED)
    return idempotent and isinstance(exc, anthropic.APIConnectionError)


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the provider asked us to wait (``retry-after-ms`` or ``retry-after``)."""
    if not isinstance(exc, anthropic.APIStatusError):
        return None
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
        return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    return None


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    hinted = retry_after(exc)
    return hinted if hinted is not None else _backoff(state)


async def call(
    provider: str,
    doing: str,
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    idempotent: bool = True,
) -> T:
    """``await fn()``, retried on transient failures; failures raised as ProviderError."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=_wait,
        retry=retry_if_exception(lambda e: is_transient(e, idempotent=idempotent)),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await fn()
    except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
        raise provider_error(provider, exc, doing) from exc
    raise AssertionError("unreachable: tenacity either returns or raises")


def status_of(exc: BaseException | None) -> int | None:
    """The HTTP status of an SDK error, or None."""
    return exc.status_code if isinstance(exc, anthropic.APIStatusError) else None
