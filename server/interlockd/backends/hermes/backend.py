"""Hermes (Nous Research hermes-agent) as a self-hosted runtime backend.

Hermes runs its own agent loop in a compute session the scheduler places
(:meth:`HermesBackend.session_spec`, rendered by ``config``); a turn is one
streamed ``POST {base_url}/v1/chat/completions`` to its API server, read by
``stream``. Hermes keeps the conversation in a session of its own, named by
the ``X-Hermes-Session-Id`` header: with it, Hermes loads the session's
history from its ``state.db`` and ignores earlier messages of the request, so
a turn sends the caller's system prompt (Hermes layers it over its own for
this turn only) and one user message: the handover transcript of what the
session has not seen, then the new message (see ``backends/handover.py``).

Tools run inside Hermes, which calls the daemon's MCP endpoint for them; the
endpoint executes and records them with the run's ToolRunner, the one the
turn is handed, and the turn streams the calls that runner executed, as
recorded (:mod:`interlockd.backends.tool_relay`). The turn never runs a tool
itself.

A conversation's binding — the Hermes session id and the compute session it
lives in — is what the orchestrator stores (:class:`SessionBound`). The
session is lost (:class:`ProviderSessionLost`, before any event) when the
turn's compute session is another one (its state was lost), or when Hermes
answers 404 for the session (``GET /api/sessions/{id}``, asked before a turn
that continues one: the chat endpoint itself would silently start afresh).

It never logs or puts in an error the runtime's API key, the request body or
the answer's text.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import orjson
from httpx_sse import EventSource, SSEError

from interlockd.backends.base import AgentBackend, TurnRequest, allow_listed_model_info
from interlockd.backends.handover import split
from interlockd.backends.hermes.config import HermesSettings, render_spec
from interlockd.backends.hermes.stream import TurnStream
from interlockd.backends.tool_relay import executed_calls
from interlockd.errors import (
    ProviderCredentialsRejected,
    ProviderError,
    ProviderPermissionDenied,
    ProviderProtocolError,
    ProviderRejected,
    ProviderSessionLost,
    ProviderTimeout,
    ProviderUnavailable,
)
from interlockd.vocabulary import (
    BackendEvent,
    ModelInfo,
    RuntimeAccess,
    RuntimeContext,
    SessionBound,
    SessionSpec,
    ToolRunner,
)

#: Limits assumed for a model the configuration and the catalog do not know.
DEFAULT_MODEL_INFO = ModelInfo(context_window=8192, max_output_tokens=2048)
_SESSION_PREFIX = "interlock-"
_ERROR_BODY_LIMIT = 16 * 1024
_ERROR_MESSAGE_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Binding:
    """A conversation's Hermes session and the compute session holding it (stored sealed)."""

    session_id: str
    compute_session_id: str

    def encode(self) -> str:
        return orjson.dumps(
            {"session": self.session_id, "compute": self.compute_session_id}
        ).decode()

    @classmethod
    def decode(cls, value: str | None) -> Binding | None:
        """The binding ``value`` encodes; None for none or one not ours (start afresh)."""
        if not value:
            return None
        try:
            data = orjson.loads(value)
            return cls(str(data["session"]), str(data["compute"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None

    @classmethod
    def new(cls, compute_session_id: str) -> Binding:
        return cls(_SESSION_PREFIX + secrets.token_hex(16), compute_session_id)


class HermesBackend(AgentBackend):
    """``provider: "hermes"`` (or the configured name): hermes-agent on placed compute.

    ``settings`` say how to start Hermes (see :class:`HermesSettings`). When
    they name no model URL, Hermes calls the daemon's local model server:
    ``local_model`` starts it if needed and returns its root URL
    (``http://127.0.0.1:PORT``; ``LocalModelServer.ensure_started`` is one).

    ``models``, when given, is an allow-list with limits; otherwise any
    non-empty model is accepted with the catalog's limits or
    ``default_model_info``. One pooled :class:`httpx.AsyncClient` serves every
    turn (pass ``http`` to supply one; closing it is then yours);
    ``read_timeout`` bounds the silence between two frames (Hermes sends a
    keep-alive comment every 30 s while a tool or the model works).
    """

    keeps_sessions = True
    runtime = True

    def __init__(
        self,
        settings: HermesSettings,
        provider: str = "hermes",
        *,
        local_model: Callable[[], Awaitable[str]] | None = None,
        models: Mapping[str, ModelInfo] | None = None,
        default_model_info: ModelInfo = DEFAULT_MODEL_INFO,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        trust_env: bool = False,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not settings.model_base_url and local_model is None:
            raise ValueError(
                f"provider {provider!r}: give the model's base_url or the local model server"
            )
        self.provider = provider
        self.settings = settings
        self._local_model = local_model
        self._model_url = settings.model_base_url.rstrip("/") or None
        self._models = dict(models) if models is not None else None
        self._default_info = default_model_info
        self._read_timeout = read_timeout
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            trust_env=trust_env,
        )

    # ---- the AgentBackend contract ---------------------------------------------

    def model_info(self, model: str) -> ModelInfo:
        return allow_listed_model_info(
            self.provider, model, self._models, default=self._default_info
        )

    async def prepare_runtime(self) -> None:
        """Resolve what :meth:`session_spec` needs: start the local model server when
        Hermes uses it (its URL goes into the spec). Call before ``session_spec``;
        cheap once the server runs. Every turn calls it too, so the model answers."""
        if self._local_model is not None and not self.settings.model_base_url:
            self._model_url = (await self._local_model()).rstrip("/") + "/v1"

    def session_spec(self, context: RuntimeContext) -> SessionSpec:
        if self._model_url is None:
            raise RuntimeError(
                f"provider {self.provider!r}: await prepare_runtime() before session_spec "
                "(the local model server's URL is not known yet)"
            )
        return render_spec(context, self.settings, self._model_url)

    async def stream_turn(
        self, request: TurnRequest, tools: ToolRunner
    ) -> AsyncIterator[BackendEvent]:
        access = request.runtime
        if access is None:
            raise ValueError("HermesBackend needs TurnRequest.runtime (a placed compute session)")
        handover = split(request.messages, request.system)
        binding = Binding.decode(request.provider_session)
        if binding is not None:
            if binding.compute_session_id != access.compute_session_id:
                raise ProviderSessionLost(
                    self.provider,
                    f"Hermes session {binding.session_id} was in another compute session; "
                    "the conversation continues in a new one",
                )
            await self._check_session(access, binding.session_id)
        else:
            binding = Binding.new(access.compute_session_id)
        await self.prepare_runtime()
        user = handover.message
        if handover.transcript:
            user = f"{handover.transcript}\n\n{user}"
        messages = [{"role": "user", "content": user}]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        body = orjson.dumps({"model": request.model, "messages": messages, "stream": True})
        url = f"{access.base_url}/v1/chat/completions"
        headers = {
            **access.headers,
            "accept": "text/event-stream",
            "content-type": "application/json",
            "authorization": f"Bearer {access.api_key}",
            "x-hermes-session-id": binding.session_id,
        }
        received = False
        try:
            async with self._http.stream("POST", url, content=body, headers=headers) as response:
                if response.status_code != 200:
                    raise await self._status_error(response, "the turn")
                yield SessionBound(binding.encode())
                turn = TurnStream(self.provider, request.tools, executed_calls(tools))
                frames = EventSource(response).aiter_sse()
                try:
                    async for sse in frames:
                        received = True
                        for event in turn.frame(sse.event, sse.data):
                            yield event
                        if turn.done:
                            break
                finally:
                    await frames.aclose()  # before the response closes, also when abandoned
                for event in turn.rest():
                    yield event
                yield turn.end()
        except SSEError:
            raise ProviderProtocolError(
                self.provider, "expected a text/event-stream answer from Hermes"
            ) from None
        except httpx.TimeoutException as exc:
            raise self._timeout_error(exc, url) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, url, received) from None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ---- pieces of a turn -------------------------------------------------------

    async def _check_session(self, access: RuntimeAccess, session_id: str) -> None:
        """ProviderSessionLost when Hermes does not know ``session_id``."""
        url = f"{access.base_url}/api/sessions/{quote(session_id, safe='')}"
        headers = {**access.headers, "authorization": f"Bearer {access.api_key}"}
        try:
            response = await self._http.get(url, headers=headers)
        except httpx.TimeoutException as exc:
            raise self._timeout_error(exc, url) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, url, False) from None
        if response.status_code == 404:
            raise ProviderSessionLost(
                self.provider,
                f"Hermes no longer has session {session_id}; "
                "the conversation continues in a new one",
            )
        if response.status_code != 200:
            raise await self._status_error(response, "looking up the session")

    # ---- error mapping: every failure of a turn becomes a ProviderError here ----

    async def _status_error(self, response: httpx.Response, doing: str) -> ProviderError:
        status = response.status_code
        body = b""
        try:
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass  # the status says enough
        message = _error_message(body)
        text = f"{doing} failed (HTTP {status})" + (f": {message}" if message else "")
        if status == 401:
            return ProviderCredentialsRejected(
                self.provider,
                f"{text}; the runtime's API key is not the one its compute session was "
                "started with: recreate the compute session",
            )
        if status == 403:
            return ProviderPermissionDenied(self.provider, text)
        if status >= 500 or status in (408, 429):
            return ProviderUnavailable(self.provider, text)
        if status in (400, 404, 413, 422):
            return ProviderRejected(self.provider, text)
        return ProviderError(self.provider, text)

    def _timeout_error(self, exc: httpx.TimeoutException, url: str) -> ProviderError:
        if isinstance(exc, httpx.ReadTimeout):
            return ProviderTimeout(
                self.provider, f"no answer for {self._read_timeout:g}s (read timeout)"
            )
        return ProviderUnavailable(self.provider, f"timed out reaching Hermes at {_where(url)}")

    def _transport_error(
        self, exc: httpx.TransportError, url: str, received: bool
    ) -> ProviderError:
        reason = str(exc)[:_ERROR_MESSAGE_LIMIT] or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            return ProviderUnavailable(
                self.provider, f"could not connect to Hermes at {_where(url)}: {reason}"
            )
        if received:
            return ProviderUnavailable(
                self.provider, f"the answer stream broke off mid-turn ({reason})"
            )
        return ProviderUnavailable(
            self.provider, f"the connection to Hermes at {_where(url)} failed: {reason}"
        )


def _error_message(body: bytes) -> str:
    """``error.message`` of an error body, one line, bounded ("" if there is none)."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        return ""
    text = " ".join(message.split())
    return text if len(text) <= _ERROR_MESSAGE_LIMIT else text[: _ERROR_MESSAGE_LIMIT - 1] + "…"


def _where(url: str) -> str:
    """host:port of a URL, without any userinfo it may carry."""
    u = httpx.URL(url)
    return f"{u.host}:{u.port or (443 if u.scheme == 'https' else 80)}"
