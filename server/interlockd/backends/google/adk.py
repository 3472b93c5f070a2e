"""ADK events (as Vertex AI Agent Engine streams them) into neutral backend events.

Pure: one :class:`AdkTranslator` per turn is fed the decoded JSON of each
event and returns what to yield. Rules (PROVIDERS.md §2):

- text parts stream as ``partial: true`` chunks, then one non-partial event
  repeats the whole text under the same id: the repeat adds only what the
  chunks did not carry;
- ``thought: true`` text is reasoning (ThinkingDelta);
- ``function_call`` / ``function_response`` of the agent's own tools are
  provider-executed ToolCall / ToolResult; those of the ``dispatch`` proxy
  tool are skipped, as the router reports the real call it dispatched;
- an event is the caller's message echoed only when its ``author`` is
  ``"user"``: ADK files a tool's ``function_response`` under
  ``content.role: "user"`` with the agent as author, and those results are
  kept (of such an event only its ``function_response`` parts, the rest being
  model input);
- ``usage_metadata`` of each complete model response is summed (cached and
  thoughts tokens kept); the last ``finish_reason`` decides the stop reason;
- a top-level ``{code, message}`` without content is an in-stream error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from interlockd.vocabulary import (
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    Usage,
    UsageReport,
)

#: The proxy tool of deployed agents (see ``interlock google deploy``).
DISPATCH_TOOL = "dispatch"

_FINISH: dict[str, StopReason] = {
    "STOP": "end_turn",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

Translated = TextDelta | ThinkingDelta | ToolCall | ToolResult | UsageReport


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error the engine reported inside the stream."""

    code: Any
    message: str


@dataclass(slots=True)
class AdkTranslator:
    """The state of one turn's translation."""

    streamed: dict[tuple[str, bool], list[str]] = field(default_factory=dict)
    finish_reason: str = ""

    @property
    def stop_reason(self) -> StopReason:
        return _FINISH.get(self.finish_reason, "end_turn")

    def translate(self, event: dict[str, Any]) -> list[Translated] | StreamError:
        if "content" not in event and ("code" in event or "error" in event):
            nested = event.get("error")
            error: dict[str, Any] = nested if isinstance(nested, dict) else event
            return StreamError(error.get("code"), str(error.get("message") or "unknown error"))
        out: list[Translated] = []
        event_id = str(event.get("id", ""))
        partial = bool(event.get("partial"))
        content = event.get("content") or {}
        if event.get("author") == "user":
            return out  # the message we sent, echoed
        # Role "user" from the agent carries what the model is given back: its
        # tools' results (real ADK dumps), never answer text.
        tool_results_only = content.get("role") == "user"
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if tool_results_only and "function_response" not in part:
                continue
            if "text" in part and isinstance(part["text"], str):
                out.extend(self._text(event_id, partial, part["text"], bool(part.get("thought"))))
            elif not partial and isinstance(part.get("function_call"), dict):
                call = part["function_call"]
                if call.get("name") != DISPATCH_TOOL:
                    out.append(
                        ToolCall(
                            str(call.get("id") or event_id),
                            str(call.get("name", "")),
                            _json(call.get("args") or {}),
                            provider_executed=True,
                        )
                    )
            elif not partial and isinstance(part.get("function_response"), dict):
                response = part["function_response"]
                if response.get("name") != DISPATCH_TOOL:
                    out.append(
                        ToolResult(
                            str(response.get("id") or event_id),
                            str(response.get("name", "")),
                            _json(response.get("response")),
                            provider_executed=True,
                        )
                    )
        if not partial:
            if event.get("finish_reason"):
                self.finish_reason = str(event["finish_reason"])
            usage = event.get("usage_metadata")
            if isinstance(usage, dict):
                out.append(UsageReport(_usage(usage)))
        return out

    def _text(self, event_id: str, partial: bool, text: str, thought: bool) -> list[Translated]:
        make = ThinkingDelta if thought else TextDelta
        key = (event_id, thought)
        if partial:
            self.streamed.setdefault(key, []).append(text)
            return [make(text)] if text else []
        sent = "".join(self.streamed.pop(key, []))
        if text.startswith(sent) and len(text) > len(sent):
            return [make(text[len(sent) :])]
        if not sent and text:
            return [make(text)]
        return []


def _usage(usage: dict[str, Any]) -> Usage:
    thoughts = int(usage.get("thoughts_token_count") or 0)
    return Usage(
        # Gemini's prompt count includes the cached tokens, like ours.
        input_tokens=int(usage.get("prompt_token_count") or 0),
        output_tokens=int(usage.get("candidates_token_count") or 0) + thoughts,
        cache_read_tokens=int(usage.get("cached_content_token_count") or 0),
        reasoning_tokens=thoughts,
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
