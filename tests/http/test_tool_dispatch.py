"""The HTTP side's tool dispatch route: who may call back, and what they get.

The channels and their tokens are tested in tests/tools/test_grants.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import RunningDaemon


def url(daemon: RunningDaemon) -> str:
    return f"http://127.0.0.1:{daemon.daemon.http_port}/v1/tools/dispatch"


def body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tool_name": "search_conversations",
        "arguments": {"query": "x"},
        "call_id": "call-1",
        "user_id": "u-ref",
        "session_id": "sess-1",
    }
    base.update(fields)
    return base


async def post(daemon: RunningDaemon, token: str | None, payload: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient() as client:
        return await client.post(url(daemon), json=payload, headers=headers, timeout=10)


async def test_a_valid_token_hands_the_call_to_its_run(daemon: RunningDaemon) -> None:
    """The call reaches the run's channel; the run's answer is the HTTP response."""
    channel = await daemon.daemon.dispatch.open(
        "u-ref", 60, sandbox_id=daemon.sandbox_id, run_id="run_test"
    )
    channel.provider_session = "sess-1"

    async def run_side() -> None:
        call = await channel.calls.get()
        assert (call.call_id, call.tool_name, call.arguments) == (
            "call-1",
            "search_conversations",
            {"query": "x"},
        )
        call.answer.set_result({"result": {"ok": True}})

    answering = asyncio.ensure_future(run_side())
    response = await post(daemon, channel.token, body())
    await answering
    assert response.status_code == 200
    assert response.json() == {"result": {"ok": True}}
    channel.close()


@pytest.mark.parametrize(
    ("token", "payload", "status"),
    [
        (None, body(), 401),
        ("forged", body(), 401),
        ("VALID", body(user_id="u-other"), 401),
        ("VALID", body(session_id="sess-other"), 401),
        ("VALID", body(arguments="not an object"), 400),
        ("VALID", body(tool_name=""), 400),
        ("VALID", body(extra=1), 400),
        ("VALID", ["not", "an", "object"], 400),
    ],
)
async def test_rejected_callbacks_run_nothing(
    daemon: RunningDaemon, token: str | None, payload: Any, status: int
) -> None:
    """Missing, forged or misdirected tokens are 401, malformed bodies 400; nothing is queued."""
    channel = await daemon.daemon.dispatch.open(
        "u-ref", 60, sandbox_id=daemon.sandbox_id, run_id="run_test"
    )
    channel.provider_session = "sess-1"
    response = await post(daemon, channel.token if token == "VALID" else token, payload)
    assert response.status_code == status
    assert "error" in response.json()
    assert channel.calls.empty()
    channel.close()


async def test_closed_token_is_rejected(daemon: RunningDaemon) -> None:
    """Once its turn ended (channel closed), a token opens nothing."""
    channel = await daemon.daemon.dispatch.open(
        "u-ref", 60, sandbox_id=daemon.sandbox_id, run_id="run_test"
    )
    channel.close()
    response = await post(daemon, channel.token, body())
    assert response.status_code == 401
    assert len(daemon.daemon.dispatch) == 0


async def test_healthz(daemon: RunningDaemon) -> None:
    """The HTTP side answers its health check."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{daemon.daemon.http_port}/healthz")
    assert response.json() == {"status": "ok"}
