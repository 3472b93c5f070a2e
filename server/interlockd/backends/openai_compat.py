"""Any OpenAI-compatible ``/v1/chat/completions`` endpoint as a chat-loop backend.

Owns the transport of streamed chat completions (OpenAI, vLLM, llama.cpp's
server, Ollama, …): turning provider-neutral messages and tool specs into a
request body, reading the server-sent-event stream (parsed by
:class:`~interlockd.backends.chat_stream.ChatStreamParser`), and mapping every
transport and protocol failure to the daemon's
:class:`~interlockd.errors.ProviderError` tree in one place
(:meth:`OpenAICompatibleBackend.step`), and the retry of a call refused
before any of its answer arrived (:meth:`OpenAICompatibleBackend._open`). The
tool loop itself is inherited from
:class:`~interlockd.backends.base.ChatLoopBackend`.

It must never put the API key, request bodies or whole provider payloads into
an error or a log line: an error carries the HTTP status and at most a trimmed
``error.message`` of the provider.

The client is aiohttp's: this is the path every token of every run takes, and
aiohttp parses HTTP in C and hands over each read whole. Against httpx on the
benchmarks' loopback upstream (2-core box, 100 concurrent streams) it spent
~0.26 ms instead of ~5.1 ms of CPU per one-delta request and ~3.4 ms instead
of ~35 ms per paced 64-delta stream; httpx's pool scans every connection on
each request and its per-read path runs through anyio cancel scopes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import orjson
import structlog
from pydantic import Field, SecretStr, field_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from interlockd.backends.base import (
    ChatLoopBackend,
    RemoteBackendSettings,
    TurnRequest,
    allow_listed_model_info,
)
from interlockd.backends.chat_stream import ChatStreamParser, StepEvent
from interlockd.backends.registry import BackendDeps, BackendKind
from interlockd.errors import (
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
)
from interlockd.vocabulary import Message, ModelInfo

__all__ = ["DEFAULT_MODEL_INFO", "MAX_RETRY_AFTER", "OpenAICompatibleBackend", "StepEvent"]

log = structlog.get_logger(__name__)

#: Limits assumed for a model neither the configuration nor the catalog knows.
DEFAULT_MODEL_INFO = ModelInfo(context_window=8192, max_output_tokens=2048)

_USER_AGENT = "interlockd/0.1"
# How much of an error response body is read, and how much of its message is kept.
_ERROR_BODY_LIMIT = 16 * 1024
_ERROR_MESSAGE_LIMIT = 200
# After [DONE] the body normally ends at once; reading that end lets the
# connection return to the pool (a new TLS handshake per tool-loop step costs
# far more). A server that keeps the body open past [DONE] is not waited for.
_DRAIN_SECONDS = 1.0
#: Longest wait a Retry-After header may impose on a retry (by default).
MAX_RETRY_AFTER = 30.0
# Answers after which the same request may well succeed: timeouts, rate limits,
# overload and gateway failures. A chat completion holds no server-side state, so
# sending it again duplicates nothing as long as none of its answer was read.
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504, 529})
# A 429 for exhausted credit is not a rate limit: no retry can succeed.
_PERMANENT_CODES = frozenset({"insufficient_quota"})
_backoff = wait_exponential_jitter(initial=0.25, max=4.0)


class _Refused(Exception):
    """A non-200 answer: the error it means, whether a retry may help, the wait asked for."""

    def __init__(
        self, status: int, error: ProviderError, *, transient: bool, retry_after: float | None
    ) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error
        self.transient = transient
        self.retry_after = retry_after


class OpenAICompatibleBackend(ChatLoopBackend):
    """A provider speaking OpenAI's streamed chat completions.

    ``base_url`` is the API root including the version, e.g.
    ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``; requests go to
    ``{base_url}/chat/completions``. ``api_key`` is sent as a bearer token when
    non-empty.

    ``models``, when given, is an allow-list: any other model is refused with
    :class:`InvalidArgument`. Without it every model is accepted, with the
    limits :mod:`~interlockd.backends.catalog` knows for it or else
    ``default_model_info``.

    One pooled :class:`aiohttp.ClientSession` (created on first use, inside
    the event loop) serves every run of the backend; ``max_connections``
    bounds the concurrent streams (a request waits up to ``connect_timeout``
    for a free connection). ``default_max_tokens`` is sent as ``max_tokens``
    when a request sets no output limit (otherwise the provider's default
    applies). ``trust_env`` honours proxy variables such as ``HTTPS_PROXY``
    and ``NO_PROXY``, read once per endpoint (aiohttp's own ``trust_env``
    would also read ``~/.netrc`` on a worker thread for every request).

    Tool-call arguments are passed on exactly as the model produced them, even
    when the joined fragments are not valid JSON: the tool runner reports that
    to the model as a tool error, which lets it correct itself. Only an empty
    argument string is normalised to ``{}`` (servers send it for tools without
    parameters).

    A call that fails before any of its answer arrived — a transient status
    (408, 429, 5xx) or a connection that broke or was refused — is sent again,
    up to ``max_attempts`` calls in all, after the provider's ``retry-after-ms``
    / ``Retry-After`` (capped at ``max_retry_after`` seconds) or else a short
    jittered backoff. Once a byte of the answer was read nothing is retried:
    the failure is the caller's. Timeouts are not retried either (each would
    cost a whole timeout again).
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        api_key: str = "",
        *,
        models: Mapping[str, ModelInfo] | None = None,
        default_model_info: ModelInfo = DEFAULT_MODEL_INFO,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        default_max_tokens: int | None = None,
        max_connections: int = 1000,
        trust_env: bool = True,
        max_attempts: int = 1,
        max_retry_after: float = MAX_RETRY_AFTER,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts of provider {provider!r} must be at least 1")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url of provider {provider!r} must start with http:// or https://"
            )
        self.provider = provider
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._models = dict(models) if models is not None else None
        self._default_info = default_model_info
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._default_max_tokens = default_max_tokens
        self._max_connections = max_connections
        self._trust_env = trust_env
        self._attempts = max_attempts
        self._max_retry_after = max_retry_after
        self._headers = {
            "accept": "text/event-stream",
            # A compressed event stream may be buffered by proxies until it ends.
            "accept-encoding": "identity",
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
        }
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}  # endpoint URL -> its proxy
        self._in_flight = 0  # requests holding or waiting for a connection

    # ---- AgentBackend ------------------------------------------------------

    def model_info(self, model: str) -> ModelInfo:
        return allow_listed_model_info(
            self.provider, model, self._models, default=self._default_info
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ---- one provider call -------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, limit_per_host=0, keepalive_timeout=30.0
                ),
                # sock_read bounds the silence between two reads of the stream
                # (time to first token included), not the whole answer;
                # connect covers waiting for a pooled connection too.
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self._connect_timeout,
                    sock_connect=self._connect_timeout,
                    sock_read=self._read_timeout,
                ),
            )
        return session

    def _proxy(self, url: str) -> str | None:
        try:
            return self._proxies[url]
        except KeyError:
            proxy = _env_proxy(url) if self._trust_env else None
            self._proxies[url] = proxy
            return proxy

    async def _endpoint(self) -> str:
        """The chat completions URL of the next call (a hook for supervised servers)."""
        return self._url

    async def step(self, request: TurnRequest) -> AsyncIterator[StepEvent]:
        url = await self._endpoint()
        received = False  # any byte of the answer body: decides "unreachable" vs "cut off"
        busy = self._in_flight >= self._max_connections
        self._in_flight += 1
        try:
            # The body is no local of this generator: it is freed once _open()
            # returns (sent, never retried after), not held for the whole answer
            # (~4 KB per open stream with the built-in tool's schema).
            async with await self._open(
                url, orjson.dumps(_request_body(request, self._default_max_tokens))
            ) as response:
                content_type = response.headers.get("content-type", "")
                if content_type and "event-stream" not in content_type:
                    raise ProviderProtocolError(
                        self.provider,
                        f"expected a text/event-stream answer, got {content_type[:60]!r}",
                    )
                parser = ChatStreamParser(self.provider, self._clean)
                content = response.content
                while True:
                    raw = await content.readany()
                    if not raw:
                        break
                    received = True
                    for event in parser.feed(raw):
                        yield event
                    parser.check()
                    if parser.done:
                        break
                if parser.done:
                    await _drain(content)
                elif not parser.finished:
                    raise ProviderUnavailable(
                        self.provider,
                        "stream ended early: the connection closed before the answer finished",
                    )
                yield parser.end()
        except _Refused as refused:
            raise refused.error from None
        except aiohttp.ConnectionTimeoutError:
            raise self._connect_timeout_error(url, busy) from None
        except aiohttp.ServerTimeoutError:
            raise ProviderTimeout(
                self.provider, f"no answer for {self._read_timeout:g}s (read timeout)"
            ) from None
        except aiohttp.ClientPayloadError as exc:
            if "content-encoding" in str(exc).lower():
                raise ProviderProtocolError(
                    self.provider, "the answer's content encoding could not be decoded"
                ) from None
            raise self._transport_error(exc, url, received=True) from None
        except aiohttp.ClientError as exc:
            raise self._transport_error(exc, url, received) from None
        finally:
            self._in_flight -= 1

    async def _open(self, url: str, body: bytes) -> aiohttp.ClientResponse:
        """POST ``body`` and return the 200 answer, its body unread.

        Retried while retrying can help and nothing of an answer was read; a
        non-200 answer raises :class:`_Refused` (its body read and released).
        """

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            if isinstance(failure, _Refused) and failure.retry_after is not None:
                return min(failure.retry_after, self._max_retry_after)
            return _backoff(state)

        def announce(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            log.info(
                "provider_call_retried",
                provider=self.provider,
                attempt=state.attempt_number,
                # The status, or the kind of connection failure: never a body.
                failure=f"HTTP {failure.status}"
                if isinstance(failure, _Refused)
                else type(failure).__name__,
                wait_seconds=round(state.upcoming_sleep, 3),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait,
            retry=retry_if_exception(_retryable),
            before_sleep=announce,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                response = await self._http().post(
                    url, data=body, headers=self._headers, proxy=self._proxy(url)
                )
                if response.status == 200:
                    return response
                try:
                    raise await self._refusal(response)
                finally:
                    response.release()
        raise AssertionError("unreachable: tenacity either returns or raises")

    # ---- error mapping: every failure of a step becomes a ProviderError here ----

    def _clean(self, message: str) -> str:
        """A provider message made safe to show: one line, trimmed, no API key."""
        if self._api_key:
            message = message.replace(self._api_key, "[redacted]")
        message = " ".join(message.split())
        if len(message) > _ERROR_MESSAGE_LIMIT:
            message = message[: _ERROR_MESSAGE_LIMIT - 1] + "…"
        return message

    async def _refusal(self, response: aiohttp.ClientResponse) -> _Refused:
        status = response.status
        body = b""
        try:
            while len(body) < _ERROR_BODY_LIMIT:
                piece = await response.content.read(_ERROR_BODY_LIMIT - len(body))
                if not piece:
                    break
                body += piece
        except (aiohttp.ClientError, TimeoutError):
            pass  # the status says enough
        message = self._clean(_error_message(body))
        text = f"HTTP {status}" + (f": {message}" if message else "")
        transient = status in _TRANSIENT and _error_code(body) not in _PERMANENT_CODES
        hint = _retry_after(response.headers)
        error: ProviderError
        if status >= 500 or status in (408, 429):
            error = ProviderUnavailable(self.provider, text)
        else:
            if status in (401, 403):
                text += " (check the provider's api_key)"
            elif status == 404:
                text += " (check that base_url ends with /v1 and the model exists)"
            error = ProviderError(self.provider, text)
        return _Refused(status, error, transient=transient, retry_after=hint)

    def _connect_timeout_error(self, url: str, busy: bool) -> ProviderError:
        if busy:
            return ProviderUnavailable(
                self.provider,
                f"all {self._max_connections} connections to {_where(url)} are busy",
            )
        return ProviderUnavailable(self.provider, f"timed out connecting to {_where(url)}")

    def _transport_error(self, exc: aiohttp.ClientError, url: str, received: bool) -> ProviderError:
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ProviderUnavailable(
                self.provider, f"could not connect to {_where(url)}: {_reason(exc)}"
            )
        if received:
            return ProviderUnavailable(
                self.provider, f"stream ended early: connection lost mid-answer ({_reason(exc)})"
            )
        return ProviderUnavailable(
            self.provider,
            f"connection to {_where(url)} failed before an answer: {_reason(exc)}",
        )


# ---- request body ----------------------------------------------------------------


def _request_body(request: TurnRequest, default_max_tokens: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [_wire_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
        body["tool_choice"] = "auto"
    max_tokens = request.max_output_tokens or default_max_tokens
    if max_tokens:
        body["max_tokens"] = max_tokens
    return body


def _wire_message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.tool_calls:
        return {
            "role": m.role,
            # Some servers reject content: null beside tool_calls; "" is accepted by all.
            "content": m.content,
            "tool_calls": [
                {
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ],
        }
    return {"role": m.role, "content": m.content}


# ---- helpers -------------------------------------------------------------------


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read what is left of a finished stream, briefly, so its connection is reused."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            while await content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass  # the connection is closed instead of reused; the answer is complete


def _error_message(body: bytes) -> str:
    """The human part of an error body: ``error.message`` and its common variants."""
    if not body:
        return ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Proxies answer with HTML or plain text; show nothing of an HTML page.
        text = body.decode("utf-8", "replace")
        return "" if text.lstrip().startswith("<") else text
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                value = error.get(key)
                if isinstance(value, str):
                    return value
    return ""


def _retryable(exc: BaseException) -> bool:
    """Whether sending the request again may succeed (nothing of an answer was read)."""
    if isinstance(exc, _Refused):
        return exc.transient
    # Refused, reset or closed before an answer: the request was not answered.
    # A timeout is not retried: another attempt would cost a whole timeout again.
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(exc, TimeoutError)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asked to wait (``retry-after-ms``, else ``Retry-After``)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # the other form: an HTTP date
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _error_code(body: bytes) -> str:
    """``error.code`` (or ``error.type``) of an OpenAI-style error body, or ""."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    for key in ("code", "type"):
        if isinstance(error.get(key), str):
            return str(error[key])
    return ""


def _where(url: str) -> str:
    """host:port of a URL, without any userinfo it may carry."""
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{u.hostname}:{port}"


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``*_PROXY``, ``NO_PROXY``)."""
    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if proxy is None or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _reason(exc: Exception) -> str:
    return str(exc)[:_ERROR_MESSAGE_LIMIT] or type(exc).__name__


# ---- the kind: ``kind = "openai"`` -------------------------------------------------


class OpenAIProviderSettings(RemoteBackendSettings):
    """Any OpenAI-compatible /v1/chat/completions endpoint."""

    kind: Literal["openai"] = "openai"
    #: The OpenAI-compatible base URL ending in /v1 (required).
    base_url: str
    #: The deployment's key for the endpoint.
    api_key: SecretStr | None = None
    #: Context window assumed for models not listed.
    default_context_window: int = Field(default=8192, ge=512)
    #: Concurrent streams to the endpoint (its connection pool); a turn beyond it
    #: waits briefly, then fails UNAVAILABLE.
    max_connections: int = Field(default=1000, ge=1)
    #: Attempts for a model call that fails transiently before any of its answer
    #: arrived (408, 429, 5xx, a refused or dropped connection), with backoff and
    #: the provider's Retry-After honoured. Nothing is retried once it streams.
    max_attempts: int = Field(default=3, ge=1, le=10)

    @field_validator("base_url")
    @classmethod
    def _required(cls, value: str) -> str:
        if not value:
            raise ValueError("is required for kind 'openai' (the endpoint's URL ending in /v1)")
        return value


def build(p: OpenAIProviderSettings, deps: BackendDeps) -> OpenAICompatibleBackend:
    """The backend of one ``kind = "openai"`` table."""
    window = p.default_context_window
    return OpenAICompatibleBackend(
        deps.name,
        p.base_url,
        p.api_key.get_secret_value() if p.api_key else "",
        models=p.allowed_models(4096),
        default_model_info=ModelInfo(
            context_window=window, max_output_tokens=min(4096, window // 4)
        ),
        connect_timeout=p.connect_timeout_seconds,
        read_timeout=p.read_timeout_seconds,
        max_connections=p.max_connections,
        max_attempts=p.max_attempts,
    )


KIND = BackendKind(OpenAIProviderSettings, build)
