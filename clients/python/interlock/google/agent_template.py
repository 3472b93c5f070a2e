"""The agent Interlock deploys to Vertex AI Agent Engine: one ``dispatch`` tool.

ADK tools are fixed at deploy time, so instead of the sandbox's tools the
deployed agent carries a single proxy tool that POSTs each call back to the
router's tool-dispatch endpoint, which runs the real tool and answers with its
result. The callback protocol, which the router's endpoint speaks too:

- ``POST {INTERLOCK_ROUTER_URL}/v1/tools/dispatch``, the URL from the
  deployment's environment;
- ``Authorization: Bearer <token>``, the token the router put in the session
  state under ``interlock_dispatch_token`` (``state_delta``) before the turn:
  short-lived and good for that run only;
- a JSON body ``{tool_name, arguments, call_id, user_id, session_id}``;
- the answer, ``{"result": ...}`` or ``{"error": "..."}``, is the tool result.

This file is copied into the deployment as the top-level module
``interlock_agent`` and runs inside Google's runtime: it imports only the
standard library, httpx and google-adk, never anything from ``interlock``. A
failed callback is returned to the model as ``{"error": ...}``; it never raises.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from google.adk.agents import Agent
from google.adk.agents.readonly_context import ReadonlyContext
from google.adk.tools.tool_context import ToolContext

ROUTER_URL_ENV = "INTERLOCK_ROUTER_URL"
TOKEN_STATE_KEY = "interlock_dispatch_token"
DISPATCH_PATH = "/v1/tools/dispatch"
AGENT_NAME = "interlock"

# A tool may legitimately run for a while in the sandbox; the router enforces
# its own limit and answers with an error before this one fires.
DISPATCH_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 10.0


class LiteralInstruction:
    """The system prompt exactly as written.

    ADK fills ``{name}`` placeholders of a plain-string instruction from the
    session state, which would put the dispatch token into the prompt and fail
    on any other braces; an instruction provider is used verbatim.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, context: ReadonlyContext) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"LiteralInstruction({self.text!r})"


async def dispatch(
    tool_name: str, arguments: dict[str, Any], tool_context: ToolContext
) -> dict[str, Any]:
    """Call one of the tools the Interlock router offers in this conversation.

    Every tool call goes through here: the router runs the named tool and
    returns what it produced.

    Args:
      tool_name: The exact name of the tool to call. It must be one of the
        tools the router offers; any other name fails.
      arguments: The tool's arguments as a JSON object whose keys are that
        tool's parameter names (an empty object when it takes none).

    Returns:
      {"result": ...} with the tool's output, or {"error": "..."} saying why the
      call failed.
    """
    router_url = os.environ.get(ROUTER_URL_ENV, "").rstrip("/")
    if not router_url:
        return {"error": f"the agent is misconfigured: {ROUTER_URL_ENV} is not set"}
    token = tool_context.state.get(TOKEN_STATE_KEY)
    if not isinstance(token, str) or not token:
        return {
            "error": f"no {TOKEN_STATE_KEY} in the session state: tools work only in "
            "runs started by the Interlock router"
        }
    if not isinstance(arguments, dict):
        return {"error": f"arguments must be a JSON object, got {type(arguments).__name__}"}
    session = tool_context.session
    body = {
        "tool_name": tool_name,
        "arguments": arguments,
        # ADK gives every call an id; "" lets the router make one if not.
        "call_id": tool_context.function_call_id or "",
        "user_id": session.user_id,
        "session_id": session.id,
    }
    try:
        content = json.dumps(body).encode()
    except (TypeError, ValueError) as exc:
        return {"error": f"arguments are not valid JSON: {exc}"}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    timeout = httpx.Timeout(DISPATCH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(
                router_url + DISPATCH_PATH, content=content, headers=headers
            )
    except httpx.TimeoutException:
        return {"error": f"the router did not answer the {tool_name} call in time"}
    except httpx.HTTPError as exc:
        return {"error": f"could not reach the router at {router_url}: {type(exc).__name__}: {exc}"}
    return _tool_result(response)


def _tool_result(response: httpx.Response) -> dict[str, Any]:
    """The router's answer as the tool result; anything unexpected as ``{"error"}``."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    status = response.status_code
    if response.is_success:
        if isinstance(payload, dict) and ("result" in payload or "error" in payload):
            return payload
        return {"error": f"the router answered HTTP {status} without a result or an error"}
    detail = payload.get("error") if isinstance(payload, dict) else None
    if status == 401:
        reason = "the router rejected the dispatch token (expired, or not for this run): HTTP 401"
    else:
        reason = f"the router refused the call: HTTP {status}"
    return {"error": f"{reason}: {detail}" if isinstance(detail, str) and detail else reason}


def build_agent(*, model: str, instruction: str) -> Agent:
    """The deployed agent: the system prompt and ``dispatch`` as its only tool."""
    return Agent(
        name=AGENT_NAME,
        model=model,
        instruction=LiteralInstruction(instruction),
        tools=[dispatch],
    )
